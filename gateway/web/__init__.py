"""The store console: the box's own web server for technicians and marketers (FastAPI, run
by uvicorn inside the gateway), and the Meraki Scanning API receiver. See README's "Store
console"."""

from gateway.web.app import MERAKI_PATH
from gateway.web.server import WebServer

__all__ = ["MERAKI_PATH", "WebServer"]
