"""A Dubbo consumer from PyPI (dubbo-ssl-python, an implementation independent of
sofa-rpc-node's) that calls through ADDR (host:port) directly and prints one line per
call: `ok <result>` or `error <message>`.

Usage: python3 client.py ADDR INTERFACE VERSION GROUP METHOD COUNT
  echo calls send `hi<i>`.
"""
import sys

from dubbo_ssl.client import DubboClient


def main():
    addr, interface, version, group, method, count = sys.argv[1:7]
    client = DubboClient(interface, group, version=version, host=addr)
    for i in range(int(count)):
        try:
            result = client.call(method, ["hi%d" % i], timeout=3)
            print("ok %s" % result, flush=True)
        except Exception as e:  # every failure is one line for the test to read
            print("error %s" % str(e).strip().split("\n")[0], flush=True)


if __name__ == "__main__":
    main()
