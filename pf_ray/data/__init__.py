"""Data plumbing: Arrow schemas, storage, images, sources and the synthetic dataset."""
