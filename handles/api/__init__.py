"""The JSON API for the DAMS, ArchivesSpace and staff scripts (mounted at /api/v1/)."""
