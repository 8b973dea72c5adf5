// Drives headless Chromium through the `latchkey demo` flow as a person would: open
// /demo, sign in, allow the demo app, and read the result page. Run by
// scripts/browser-test, which builds and starts the demo server and passes:
//   LATCHKEY_URL        the URL the demo printed to open (http://127.0.0.1:PORT/demo)
//   LATCHKEY_PASSWORD   the demo user's password the demo printed
//   SCREENSHOT_DIR      where to save PNGs of each page
//   CHROMIUM            the browser binary (default /usr/bin/chromium)
// Exits 0 when every check passed, 1 otherwise.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const demoUrl = process.env.LATCHKEY_URL;
const password = process.env.LATCHKEY_PASSWORD;
const shots = process.env.SCREENSHOT_DIR ?? '.';
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
if (!demoUrl || !password) {
  console.error('demo.mjs: set LATCHKEY_URL and LATCHKEY_PASSWORD (scripts/browser-test does)');
  process.exit(2);
}
const origin = new URL(demoUrl).origin;
mkdirSync(shots, { recursive: true });

const ok = (what) => console.log(`ok - ${what}`);

async function run(page) {
  // 1. Open the URL the demo printed; it sends the browser to /authorize, which shows
  // the login page.
  const login = await page.goto(demoUrl);
  assert.ok(login, 'no response for /demo');
  assert.equal(login.status(), 200, `login page status ${login.status()}`);
  const authorizeUrl = new URL(page.url());
  assert.equal(authorizeUrl.pathname, '/authorize', `/demo led to ${page.url()}`);
  const nonce = authorizeUrl.searchParams.get('nonce');
  assert.ok(nonce, 'the demo app sent no nonce to /authorize');
  await page.screenshot({ path: join(shots, '1-login.png'), fullPage: true });
  ok('/demo redirects to the login page at /authorize');

  // Security headers on the login page (the final response after the redirect).
  const headers = login.headers();
  const csp = headers['content-security-policy'] ?? '';
  assert.match(csp, /(^|;)\s*frame-ancestors 'none'\s*(;|$)/,
    `Content-Security-Policy lacks frame-ancestors 'none': ${JSON.stringify(csp)}`);
  assert.equal(headers['x-frame-options'], 'DENY',
    `X-Frame-Options is ${JSON.stringify(headers['x-frame-options'])}`);
  ok(`login page headers: CSP with frame-ancestors 'none', X-Frame-Options DENY`);

  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  assert.match(await page.locator('main').innerText(), /to continue to\s+Latchkey demo app/);
  ok('login page says it continues to "Latchkey demo app"');

  // 2. Sign in.
  await page.getByLabel('Username').fill('demo');
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();

  // 3. The consent page names the app and lists the scopes in words.
  const consentHeading = page.getByRole('heading', { name: /^Allow .+ to use your account\?$/ });
  await consentHeading.waitFor();
  await page.screenshot({ path: join(shots, '2-consent.png'), fullPage: true });
  assert.equal((await consentHeading.innerText()).trim(),
    'Allow Latchkey demo app to use your account?');
  const items = (await page.locator('main li').allInnerTexts()).map((t) => t.trim());
  const words = {
    openid: /know who you are/i,
    profile: /name and profile/i,
    email: /email address/i,
  };
  const listed = {};
  for (const item of items) {
    const m = item.match(/^(.+?)\s*\(([^()]+)\)$/);
    assert.ok(m, `consent item is not "words (scope)": ${JSON.stringify(item)}`);
    const [, description, scope] = m;
    assert.ok(description.split(/\s+/).length >= 3,
      `scope ${scope} is not described in words: ${JSON.stringify(item)}`);
    listed[scope] = description;
  }
  assert.deepEqual(Object.keys(listed).sort(), ['email', 'openid', 'profile'],
    `consent page lists ${JSON.stringify(items)}`);
  for (const [scope, re] of Object.entries(words)) {
    assert.match(listed[scope], re, `scope ${scope} described as ${JSON.stringify(listed[scope])}`);
  }
  ok(`consent page names "Latchkey demo app" and lists ${items.length} scopes in words`);

  // 4. Allow: the browser goes to the demo app's callback, which redeems the code and
  // calls userinfo.
  const [result] = await Promise.all([
    page.waitForResponse((r) => new URL(r.url()).pathname === '/demo/callback'),
    page.getByRole('button', { name: 'Allow' }).click(),
  ]);
  await page.waitForLoadState();
  await page.screenshot({ path: join(shots, '3-result.png'), fullPage: true });
  const callback = new URL(result.url());
  assert.equal(callback.searchParams.get('iss'), origin, 'callback iss parameter');
  assert.equal(result.status(), 200,
    `callback page status ${result.status()}: ${await page.locator('main').innerText()}`);
  await page.getByRole('heading', { name: 'Signed in: the demo app received tokens' }).waitFor();
  ok('Allow lands on the demo result page');

  const block = async (heading) => {
    const pre = page.locator(`h2:text-is("${heading}") + pre`);
    assert.equal(await pre.count(), 1, `no "${heading}" block on the result page`);
    const text = await pre.innerText();
    try {
      return JSON.parse(text);
    } catch {
      assert.fail(`"${heading}" is not JSON: ${text}`);
    }
  };
  const userinfo = await block('Userinfo answer');
  assert.equal(userinfo.email, 'demo@example.com', `userinfo: ${JSON.stringify(userinfo)}`);
  assert.equal(userinfo.preferred_username, 'demo', `userinfo: ${JSON.stringify(userinfo)}`);
  assert.ok(userinfo.sub, 'userinfo has no sub');
  ok('userinfo answer shows demo@example.com');

  const idToken = await block('ID token claims');
  assert.equal(idToken.nonce, nonce, `ID token nonce ${idToken.nonce}, sent ${nonce}`);
  assert.equal(idToken.iss, origin, `ID token iss ${idToken.iss}`);
  assert.equal(idToken.sub, userinfo.sub, 'ID token sub differs from userinfo sub');
  assert.equal(idToken.aud, authorizeUrl.searchParams.get('client_id'), 'ID token aud');
  ok('ID token carries the nonce the demo app sent, the issuer and the same sub');

  const tokens = await block('Token response');
  assert.equal(tokens.token_type, 'Bearer');
  assert.equal(tokens.id_token?.split('.').length, 3, 'token response has no compact id_token');
  ok('token response has a Bearer access token and an ID token');
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  try {
    await run(page);
    assert.deepEqual(pageErrors, [], 'script errors on the pages');
  } catch (e) {
    failed = true;
    console.log(`not ok - ${e.message}`);
    console.log(`  at ${page.url()}`);
    await page.screenshot({ path: join(shots, 'failure.png'), fullPage: true }).catch(() => {});
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
