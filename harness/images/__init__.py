"""Guest images: pinned downloads, local files and built images, all verified before use."""
