"""Images for people: overlays of analysis results (decision support, not a diagnosis)."""
