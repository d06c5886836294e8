"""The REST API: dependencies and routes per resource."""
