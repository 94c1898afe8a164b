"""osm-trust-agent: the program on NFVI hosts (and inside VNFs) that answers with TPM evidence.

:mod:`osm_trustmgr.agent.tpm` is its TPM access (EK, AK, quotes, credential activation) through tpm2-pytss.
"""
