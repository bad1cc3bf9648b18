"""Scripts that turn the official dataset downloads into the layouts mmprompt reads."""
