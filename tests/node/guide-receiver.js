// The Bellamy Book webhooks guide's receiver, run as it is written.
// Between the GUIDE BEGIN / GUIDE END markers stands the guide's code verbatim
// (tests/acceptance/test_guide_receiver.py checks it against the guide itself).
// Around it: the Express app the snippet assumes, and the handlers it calls but
// leaves to the reader.
const express = require('express');
const app = express();
app.use(express.json());
const WEBHOOK_SECRET = process.env.WEBHOOK_SECRET;
const received = [];
// One line per answered request, so the test can await them.
app.use((req, res, next) => {
  res.on('finish', () => console.log(`${res.statusCode} ${req.headers['x-webhook-id']}`));
  next();
});

// --- GUIDE BEGIN: Verify Signature
const crypto = require('crypto');
function verifyWebhookSignature(payload, signature, secret) {
const hmac = crypto.createHmac('sha256', secret);
const digest = hmac.update(JSON.stringify(payload)).digest('hex');
return digest === signature;
}
// In your webhook handler
app.post('/webhook', (req, res) => {
const signature = req.headers['x-webhook-signature'];
const isValid = verifyWebhookSignature(req.body, signature, WEBHOOK_SECRET);
if (!isValid) {
return res.status(401).send('Invalid signature');
}
// Process webhook
handleWebhook(req.body);
res.status(200).send('OK');
});
// --- GUIDE END

// --- GUIDE BEGIN: Webhook Handler Example
function handleWebhook(payload) {
switch (payload.event) {
case 'post.created':
handlePostCreated(payload.data);
break;
case 'comment.created':
handleCommentCreated(payload.data);
break;
// Handle other events
}
}
function handlePostCreated(post) {
// Your logic here
}
// --- GUIDE END

function handleCommentCreated(comment) {
  // The guide calls it without defining it.
}

// Every payload that passed verification, for the test to read back.
const originalHandle = handleWebhook;
handleWebhook = function (payload) {
  received.push(payload);
  return originalHandle(payload);
};
app.get('/received', (req, res) => res.json(received));

const server = app.listen(0, '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
