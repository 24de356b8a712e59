"""`qpart token`: a device's bearer token and its entry for the server's devices file."""
from qpart.cli.common import command


def cmd_token(args) -> None:
    from qpart.server.serving.auth import new_token
    token, digest = new_token()
    print(f"# give the device its token (qpart-device --token or $QPART_TOKEN): {token}")
    print("# and add this to the server's devices file (qpart-server --devices FILE):")
    print("[[device]]")
    print(f'id = "{args.device}"')
    print(f'token_sha256 = "{digest}"')
    print("models = [" + ", ".join(f'"{m}"' for m in args.allow) + "]")
    if args.certificate_cn:
        print(f'certificate_cn = "{args.certificate_cn}"')


def register(sub) -> None:
    p = command(sub, "token", cmd_token, "make a device token and its devices-file entry", repository=False,
                description="Print a new random bearer token and the [[device]] entry for qpart-server --devices.")
    p.add_argument("device", help="device id (shows in logs and metrics)")
    p.add_argument("--allow", nargs="+", default=["*"], help="models the device may use (default: all)")
    p.add_argument("--certificate-cn", help="with mutual TLS: the common name its client certificate must carry")
