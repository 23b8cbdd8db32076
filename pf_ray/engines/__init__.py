"""Text-generation engines shared by the distortion and rewriting stages."""
