"""Generate text from the character LM token by token over one WebSocket.

    python examples/generate_text.py [--url http://127.0.0.1:8000] [--model char-lm]
                                     [--prompt "def "] [--length 300]
                                     [--temperature 0.8] [--top-k 20] [--seed 0]

The server carries the LSTM state; the client sends the prompt once, then one sampled
character per message, and samples from the logits it gets back (temperature and top-k on
the client side). `rnnserve_client`'s `Stream` resumes a dropped socket on the same session
and resends its last message with the same `seq`: the server answers it again without
advancing, so the text goes on exactly where it was.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys

from rnnserve_client import AsyncClient, RnnServeError


def sample(logits: list[float], temperature: float, top_k: int, rng: random.Random) -> int:
    """A token id drawn from softmax(logits / temperature), keeping the top_k best (0: all)."""
    if temperature <= 0:
        return max(range(len(logits)), key=logits.__getitem__)
    ranked = sorted(range(len(logits)), key=logits.__getitem__, reverse=True)
    kept = ranked[:top_k] if top_k > 0 else ranked
    peak = logits[kept[0]]
    weights = [math.exp((logits[i] - peak) / temperature) for i in kept]
    return rng.choices(kept, weights=weights)[0]


async def generate(args: argparse.Namespace) -> None:
    async with AsyncClient(args.url, api_key=args.api_key) as client:
        card = (await client.model(args.model)).card or {}
        vocabulary: list[str] | None = card.get("labels")
        if vocabulary is None:  # a token model without a character table: show the ids
            vocabulary = [f"<{i}>" for i in range(card["vocab_size"])]
        index = {char: i for i, char in enumerate(vocabulary)}
        prompt = [index.get(char, 0) for char in args.prompt] or [0]
        rng = random.Random(args.seed)
        async with await client.stream(args.model) as stream:
            print(args.prompt, end="", flush=True)
            answer = await stream.step(prompt)
            for _ in range(args.length):
                token = sample(answer.outputs[-1], args.temperature, args.top_k, rng)
                print(vocabulary[token], end="", flush=True)
                answer = await stream.step([token])
            print(f"\n\n[session {stream.session_id}, {answer.seq} steps]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default="char-lm")
    parser.add_argument("--api-key", help="when the server has RNNSERVE_API_KEYS")
    parser.add_argument("--prompt", default="def ")
    parser.add_argument("--length", type=int, default=300)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    try:
        asyncio.run(generate(parser.parse_args()))
    except RnnServeError as exc:
        sys.exit(f"\nserver error: {exc}")


if __name__ == "__main__":
    main()
