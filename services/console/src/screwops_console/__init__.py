"""Console: the web UI people use to inspect images, label them and run the pipeline.

It holds no state of its own and talks to the services only through their gRPC APIs (gateway,
ingestion, labeling, registry); where no API exists it reads what the owner published: the
trainer's run records in MongoDB and validation's reports in MinIO, read-only.
"""
