"""Ingestion: images come in by gRPC upload, server-side import or MinIO bucket drops, are
checked, stored content-addressed and grouped into immutable dataset versions."""
