"""The CLI's one HTTP client (urllib): JSON in and out, errors as ClientError(status, message)."""
import json
import urllib.error
import urllib.request


class ClientError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class Client:
    def __init__(self, url, token, timeout=60):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method, path, body=None, raw=False):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + "/api/v1" + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                payload = r.read()
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            try:
                msg = json.loads(text).get("error", text)
            except ValueError:
                msg = text
            raise ClientError(e.code, msg) from None
        except (urllib.error.URLError, OSError) as e:
            raise ClientError(0, f"cannot reach the master at {self.url} ({getattr(e, 'reason', e)}); "
                                 f"start it with `genefarm serve`") from None
        return payload.decode(errors="replace") if raw else json.loads(payload)

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None):
        return self.call("POST", path, body if body is not None else {})
