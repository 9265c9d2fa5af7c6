# A kernel through a seat link: runs CODE, prints its result's text/plain.
# Usage: seat_kernel.py LINK CA_FILE CODE (LINK ends with /).
import asyncio, json, ssl, sys, uuid
from tornado import httpclient, websocket
base, ca, code = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=ca)
async def main():
    c = httpclient.AsyncHTTPClient()
    r = await c.fetch(base + "api/kernels", method="POST", body="{}", ssl_options=ctx)
    kid = json.loads(r.body)["id"]
    url = "wss" + base[len("https"):] + "api/kernels/" + kid + "/channels"
    ws = await websocket.websocket_connect(httpclient.HTTPRequest(url, ssl_options=ctx))
    mid = uuid.uuid4().hex
    ws.write_message(json.dumps({"header": {"msg_id": mid, "username": "t", "session": uuid.uuid4().hex,
        "msg_type": "execute_request", "version": "5.3"}, "parent_header": {}, "metadata": {},
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
        "allow_stdin": False}, "channel": "shell", "buffers": []}))
    while True:
        m = await ws.read_message()
        if m is None:
            sys.exit("the websocket closed before the result")
        m = json.loads(m)
        if m.get("parent_header", {}).get("msg_id") != mid:
            continue
        if m["msg_type"] == "execute_result":
            print(m["content"]["data"]["text/plain"])
            return
        if m["msg_type"] == "error":
            sys.exit("kernel error: " + m["content"]["ename"] + ": " + m["content"]["evalue"])
asyncio.run(main())
