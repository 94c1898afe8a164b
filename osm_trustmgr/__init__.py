"""osm-trustmgr: TPM 2.0 remote attestation for Open Source MANO."""

__version__ = "0.1.0"
