"""Data plumbing: Spark schema checks on the driver, Arrow -> tensors on workers."""
