"""The REST client example of docs/clients.md (aiohttp), kept identical to it by the test suite.

As written it talks to `make demo` (its API token, recipients the simulated bot can reach).
"""

import asyncio

import aiohttp

API_URL = "http://localhost:8080"
API_TOKEN = "demo-token-0123456789"  # make demo's; your own service: server.api_token


async def send_message(message, user_ids, media_type=None, media_url=None):
    payload = {"message": message, "user_ids": user_ids}
    if media_type:
        payload["media_type"] = media_type
        payload["media_url"] = media_url
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{API_URL}/send-message", json=payload, headers=headers) as resp:
            resp.raise_for_status()
            return await resp.json()


async def main():
    result = await send_message("Hello from the broadcast service!", [111, 222])
    print(result)  # {'broadcast_id': 2, 'status': 'queued', 'total': 2}


asyncio.run(main())
