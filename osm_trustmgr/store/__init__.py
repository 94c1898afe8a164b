"""The Trust Manager's MongoDB collections (all named ``trust_*``; OSM's own collections are read-only)."""
