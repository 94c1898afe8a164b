"""The OSM contract (DESIGN.md §3): Kafka message formats, read-only OSM records, the LoA an NS asks for.

Everything here was checked against OSM's own source; each module names the repository, file and function.
"""
