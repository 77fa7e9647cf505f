// Standard Webhooks signature check with node's own crypto (the npm `standardwebhooks`
// package does the same; clients/typescript uses it): v1 = base64 HMAC-SHA256 of
// "id.timestamp.body", keyed with the base64 part of the whsec_ secret.
const crypto = require("node:crypto");

function verify(headers, body, secret) {
  const id = headers["webhook-id"];
  const timestamp = headers["webhook-timestamp"];
  const signatures = (headers["webhook-signature"] || "").split(" ");
  if (!id || !timestamp || Math.abs(Date.now() / 1000 - Number(timestamp)) > 300) return false;
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const expected = crypto.createHmac("sha256", key).update(`${id}.${timestamp}.${body}`).digest();
  return signatures.some((entry) => {
    const [version, value] = entry.split(",");
    const given = Buffer.from(value || "", "base64");
    return version === "v1" && given.length === expected.length && crypto.timingSafeEqual(given, expected);
  });
}

// serve(port, routes): routes map a path to (payload) => [status, json]; requests whose
// signature does not verify are answered 401.
function serve(port, routes) {
  const secret = process.env.TRIGGERS_WEBHOOK_SECRET;
  require("node:http").createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      const route = routes[req.url];
      if (!route) { res.writeHead(404); return res.end(); }
      if (secret && !verify(req.headers, body, secret)) { res.writeHead(401); return res.end(); }
      const [status, json] = route(JSON.parse(body));
      res.writeHead(status, { "Content-Type": "application/json" });
      res.end(JSON.stringify(json));
    });
  }).listen(port, "127.0.0.1");
}

module.exports = { verify, serve };
