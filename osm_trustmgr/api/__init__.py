"""The Trust Manager's REST API under ``/osm/trust/v1`` (DESIGN.md §5 strict mode and queries)."""
