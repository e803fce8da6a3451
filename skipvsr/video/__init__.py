"""Video wing: probe, decode, encode (io, audio), streamed chunked upscaling, and routing-map
drawing (overlay); floor only."""
