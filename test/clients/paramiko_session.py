"""paramiko through the proxy, for test/clients.test.ts.

One connection that checks the proxy's host key against a known_hosts file,
logs in with the token (from JSP_TEST_TOKEN) as a password, runs a command,
uploads through a command's stdin, and puts and gets a file over SFTP.
Prints one JSON object with what it saw.

usage: paramiko_session.py PORT USER KNOWN_HOSTS SIZE
"""
import hashlib
import json
import os
import sys

import paramiko


def main():
    port, user, known_hosts, size = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    client = paramiko.SSHClient()
    client.load_host_keys(known_hosts)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect('127.0.0.1', port=port, username=user, password=os.environ['JSP_TEST_TOKEN'],
                   look_for_keys=False, allow_agent=False, timeout=20)
    transport = client.get_transport()
    result = {
        'version': paramiko.__version__,
        'cipher': [transport.local_cipher, transport.remote_cipher],
        'mac': [transport.local_mac, transport.remote_mac],
    }

    _, stdout, _ = client.exec_command('id -un; exit 3')
    result['stdout'] = stdout.read().decode()
    result['exitStatus'] = stdout.channel.recv_exit_status()

    data = os.urandom(size)
    result['sent'] = hashlib.sha256(data).hexdigest()
    stdin, stdout, _ = client.exec_command('sha256sum')
    stdin.write(data)
    stdin.channel.shutdown_write()
    result['received'] = stdout.read().decode().split()[0]

    sftp = client.open_sftp()
    with sftp.open('paramiko-test.bin', 'wb') as f:
        f.set_pipelined(True)
        f.write(data)
    with sftp.open('paramiko-test.bin', 'rb') as f:
        f.prefetch()
        result['sftpRoundTrip'] = hashlib.sha256(f.read()).hexdigest()
    sftp.remove('paramiko-test.bin')
    sftp.close()

    result['cipherAfter'] = [transport.local_cipher, transport.remote_cipher]
    client.close()
    print(json.dumps(result))


main()
