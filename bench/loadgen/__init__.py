"""Load generators: wrk when installed, else a built-in asyncio client; websockets for streams."""
