"""Database models, sessions and the stores of blobs and spike records."""
