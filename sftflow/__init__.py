"""sftflow: supervised fine-tuning pipelines for Gemini on Vertex AI, with an offline local backend."""

__version__ = "0.1.0"
