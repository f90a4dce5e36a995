"""Face detection, alignment, embedding, the enrollment gallery and verification decisions."""
