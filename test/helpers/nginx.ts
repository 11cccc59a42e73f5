// Test fixture: nginx in front of a Hub, configured as JupyterHub's
// documentation has it (WebSocket upgrades passed on, no buffering), the
// front proxy most Hubs have. Debian 12's nginx, unpacked by
// scripts/install-deps.sh --test (installing the package would start a
// system nginx on port 80).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { httpStatus, type TlsFiles } from './tls.js';
import { freePort, waitFor } from './wait.js';

export const NGINX = '/opt/jupyter-ssh-proxy-test/nginx/usr/sbin/nginx';

export interface NginxOptions {
  /** Where it forwards everything: the Hub's public URL (its configurable-http-proxy), over http. */
  upstream: string;
  /** Serves https with this certificate. */
  tls?: TlsFiles;
  /** nginx's proxy_read_timeout: how long an upgraded connection may go without a byte from the Hub's side (nginx's default is 60 s). */
  readTimeoutSeconds?: number;
}

export interface Nginx {
  url: string;
  /** The error log (at info: it says why it closed a connection). */
  errors(): string;
  stop(): Promise<void>;
}

export async function startNginx(options: NginxOptions): Promise<Nginx> {
  if (!fs.existsSync(NGINX)) throw new Error(`run scripts/install-deps.sh --test: ${NGINX} is missing`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-nginx-'));
  const port = await freePort();
  const errorLog = path.join(dir, 'error.log');
  const config = `
daemon off;
master_process off;
pid ${dir}/nginx.pid;
error_log ${errorLog} info;
events { worker_connections 1024; }
http {
  access_log ${dir}/access.log;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  map $http_upgrade $connection_upgrade {
    default upgrade;
    '' close;
  }
  server {
    listen 127.0.0.1:${port}${options.tls ? ' ssl' : ''};
    ${options.tls ? `ssl_certificate ${options.tls.certFile};\n    ssl_certificate_key ${options.tls.keyFile};` : ''}
    location / {
      proxy_pass ${options.upstream.replace(/\/*$/, '')};
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header X-Scheme $scheme;
      proxy_buffering off;
      ${options.readTimeoutSeconds === undefined ? '' : `proxy_read_timeout ${options.readTimeoutSeconds}s;`}
    }
  }
}
`;
  fs.writeFileSync(path.join(dir, 'nginx.conf'), config);
  const child: ChildProcess = spawn(NGINX, ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', errorLog], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const errors = () => (fs.existsSync(errorLog) ? fs.readFileSync(errorLog, 'utf8') : '');
  const stop = async () => {
    child.kill('SIGTERM');
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5000).unref())]);
    child.kill('SIGKILL');
    await exited;
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    // Up once it answers the Hub's API root through to the Hub.
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`nginx exited: ${errors()}`);
        return (await httpStatus(`${url}/hub/api/`, options.tls)) === 200;
      },
      { timeoutMs: 20_000, what: `nginx at ${url}` },
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return { url, errors, stop };
}
