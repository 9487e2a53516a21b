"""What the call page (signaling/static/) reports, read by the browser drivers."""
