"""The README's REST client example (aiohttp); kept identical to it by the test suite."""

import asyncio

import aiohttp

API_URL = "http://localhost:8080"
API_TOKEN = "change-me-to-a-long-random-token"


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
    result = await send_message("Hello from the broadcast service!", [123456789, 987654321])
    print(result)  # {'broadcast_id': 1, 'status': 'queued', 'total': 2}


asyncio.run(main())
