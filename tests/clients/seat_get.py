# One GET over https (or http with a token header): prints status and body.
# Usage: seat_get.py URL CA_FILE AUTHORIZATION (CA_FILE and AUTHORIZATION may be "").
import ssl, sys, urllib.request, urllib.error
url, ca, auth = sys.argv[1:4]
req = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
ctx = ssl.create_default_context(cafile=ca) if url.startswith("https") else None
try:
    r = urllib.request.urlopen(req, context=ctx, timeout=10)
    print(r.status, r.read(300).decode(errors="replace"))
except urllib.error.HTTPError as e:
    print(e.code, e.read(300).decode(errors="replace"))
