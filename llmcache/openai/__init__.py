"""The OpenAI client wrapper: cached results for the SDK's own methods, streaming included."""
