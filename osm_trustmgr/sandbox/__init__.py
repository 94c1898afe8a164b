"""The embedded sandbox: simulated OSM, broker, store and a fleet of TPMs, all on loopback.

:mod:`osm_trustmgr.sandbox.swtpm` runs real swtpm processes with EK certificates from private CAs;
:mod:`osm_trustmgr.sandbox.softtpm` is a software stand-in for fleets too large for real TPMs.
"""
