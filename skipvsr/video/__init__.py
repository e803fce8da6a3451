"""Video wing: probe, decode, encode (io, audio) and streamed chunked upscaling; floor only."""
