"""Classical and published baseline methods, one file per method."""
