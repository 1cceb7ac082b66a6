// The egress guard against real sockets on loopback: what it refuses and what it lets through
// when the administrator allows it, for fetch (redirects too) and node:http agents.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createServer, get, type Agent, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fetch } from 'undici';
import { EgressGuard, EgressRefused } from '../../src/backends/egress.js';

let server: Server;

/** The guard's refusal a failed fetch carries. */
function refusedBy(error: unknown): string | null {
  const cause = (error as { cause?: unknown } | null)?.cause;
  return cause instanceof EgressRefused ? cause.message : null;
}
let port = 0;

beforeAll(async () => {
  server = createServer((req, res) => {
    if (req.url === '/hop') {
      res.writeHead(302, { Location: `http://127.0.0.2:${port}/secret` });
      return res.end();
    }
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end(`here ${req.url}`);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

describe('EgressGuard.refusal', () => {
  const guard = new EgressGuard({ allow: [] });

  it.each([
    '127.0.0.1',
    '127.9.8.7',
    '10.1.2.3',
    '172.20.0.1',
    '192.168.1.1',
    '169.254.169.254',
    '100.64.0.1',
    '0.0.0.0',
    '224.0.0.1',
    '::1',
    '::',
    'fe80::1',
    'fd00::1',
    '::ffff:127.0.0.1',
    '::ffff:7f00:1',
    '[::1]',
  ])('refuses the internal address %s', (address) => {
    expect(guard.refusal(address)).toMatch(/internal address/);
  });

  it.each(['8.8.8.8', '1.1.1.1', '2001:4860:4860::8888', '::ffff:8.8.8.8'])(
    'lets the public address %s through',
    (address) => {
      expect(guard.refusal(address)).toBeNull();
    },
  );

  it('lets through what the allow-list names, and only that', () => {
    const allowing = new EgressGuard({ allow: ['127.0.0.1/32', '10.0.0.0/8', 'fd00::/8'] });
    expect(allowing.refusal('127.0.0.1')).toBeNull();
    expect(allowing.refusal('::ffff:127.0.0.1')).toBeNull();
    expect(allowing.refusal('10.200.0.1')).toBeNull();
    expect(allowing.refusal('fd12::1')).toBeNull();
    expect(allowing.refusal('127.0.0.2')).toMatch(/internal/);
    expect(allowing.refusal('192.168.0.1')).toMatch(/internal/);
  });

  it('refuses a malformed allow-list at start-up', () => {
    expect(() => new EgressGuard({ allow: ['localhost'] })).toThrow(/not an address/);
    expect(() => new EgressGuard({ allow: ['10.0.0.0/33'] })).toThrow(/prefix/);
  });
});

describe('EgressGuard.checkUrl', () => {
  const guard = new EgressGuard({ allow: [] });

  it('refuses loopback by literal, in any spelling, and by name', async () => {
    for (const url of [
      'http://127.0.0.1/',
      'http://[::1]:80/',
      'http://0x7f.1/',
      'http://2130706433/',
      'http://localhost/',
    ]) {
      await expect(guard.checkUrl(url)).rejects.toBeInstanceOf(EgressRefused);
    }
  });

  it('refuses other schemes, credentials in the URL and names that do not resolve', async () => {
    await expect(guard.checkUrl('file:///etc/passwd')).rejects.toMatchObject({ reason: 'bad-url' });
    await expect(guard.checkUrl('http://user:pw@8.8.8.8/')).rejects.toMatchObject({ reason: 'bad-url' });
    await expect(guard.checkUrl('not a url')).rejects.toMatchObject({ reason: 'bad-url' });
    await expect(guard.checkUrl('http://no-such-host.invalid/')).rejects.toMatchObject({
      reason: 'unresolvable',
    });
  });

  it('accepts an allowed loopback address', async () => {
    const allowing = new EgressGuard({ allow: ['127.0.0.1'] });
    await expect(allowing.checkUrl(`http://127.0.0.1:${port}/`)).resolves.toBeInstanceOf(URL);
  });
});

describe('EgressGuard.dispatcher', () => {
  it('refuses the connection itself, by literal and by name', async () => {
    const dispatcher = new EgressGuard({ allow: [] }).dispatcher({ connectTimeoutMs: 5000 });
    for (const host of ['127.0.0.1', 'localhost']) {
      const error = await fetch(`http://${host}:${port}/`, { dispatcher }).catch((e: unknown) => e as Error);
      expect(refusedBy(error)).toMatch(/internal address/);
    }
    await dispatcher.close();
  });

  it('reaches an allowed address, and re-checks where a redirect leads', async () => {
    const dispatcher = new EgressGuard({ allow: ['127.0.0.1'] }).dispatcher({ connectTimeoutMs: 5000 });
    const ok = await fetch(`http://127.0.0.1:${port}/fine`, { dispatcher });
    expect(await ok.text()).toBe('here /fine');
    const error = await fetch(`http://127.0.0.1:${port}/hop`, { dispatcher }).catch(
      (e: unknown) => e as Error,
    );
    expect(refusedBy(error)).toMatch(/^127\.0\.0\.2 is an internal address/);
    await dispatcher.close();
  });
});

describe('EgressGuard.agents', () => {
  // The request is made outside the promise, so that a refusal thrown at the caller fails the test.
  const request = (agent: Agent, host: string) => {
    let settle: { resolve: (body: string) => void; reject: (error: Error) => void } | null = null;
    const answered = new Promise<string>((resolve, reject) => (settle = { resolve, reject }));
    const req = get({ host, port, path: '/agent', agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => settle?.resolve(body));
    });
    req.on('error', (error) => settle?.reject(error));
    return answered;
  };

  it('refuses internal addresses on connect and reaches allowed ones', async () => {
    const refusing = new EgressGuard({ allow: [] }).agents();
    await expect(request(refusing.http, '127.0.0.1')).rejects.toBeInstanceOf(EgressRefused);
    await expect(request(refusing.http, 'localhost')).rejects.toBeInstanceOf(EgressRefused);
    const allowing = new EgressGuard({ allow: ['127.0.0.1', '::1'] }).agents();
    await expect(request(allowing.http, '127.0.0.1')).resolves.toBe('here /agent');
    refusing.http.destroy();
    allowing.http.destroy();
  });
});
