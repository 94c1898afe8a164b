"""Command-line programs: ``osm-trustmgr`` (service and admin) and ``osm-trust`` (user CLI)."""
