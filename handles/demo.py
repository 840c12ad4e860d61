"""Demo data for `make run`: a prefix served by the bundled simulator, a few assets and handles."""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.db import transaction

from handles.models import Asset, Handle, Prefix
from handles.services.configuration import asset_save, prefix_save
from handles.services.handles import handle_mint

DEMO_PREFIX = "20.500.12345"
DEMO_SECRET_ENV = "HANDLE_SECRET_DEMO"
DEMO_ASSETS = [
    ("dams", "node-1001", "Collembola specimen drawings, plate 3", "https://dams.example.edu/node/1001"),
    ("dams", "node-1002", "Letter from Isabella, 1898", "https://dams.example.edu/node/1002"),
    ("archivesspace", "do-77", "Campus map, 1921", "https://aspace.example.edu/repositories/2/digital_objects/77"),
]


def seed(*, server_url: str, certificate_path: Path, username: str, password: str) -> list[str]:
    """Idempotent: running it again changes nothing. Returns what it did, for the console."""
    done: list[str] = []
    user_model = get_user_model()
    if not user_model.objects.filter(username=username).exists():
        user_model.objects.create_superuser(username=username, email="", password=password)
        done.append(f"created superuser {username}")
    with transaction.atomic():
        prefix = Prefix.objects.filter(prefix=DEMO_PREFIX).first() or Prefix(prefix=DEMO_PREFIX)
        prefix.site_name = prefix.site_name or "Collections Portal (demo)"
        prefix.is_default = True
        prefix.server_url = server_url
        prefix.auth_identity = f"300:{DEMO_PREFIX}/ADMIN"
        prefix.secret_env_var = DEMO_SECRET_ENV
        prefix.tls_mode = Prefix.TLS.PINNED
        prefix.pinned_certificate = certificate_path.read_text()
        prefix.hs_admin_handle = f"{DEMO_PREFIX}/ADMIN"
        prefix.hs_admin_index = 300
        prefix.hs_admin_permissions = "111111111111"
        prefix_save(prefix=prefix)
    for source, external_id, title, url in DEMO_ASSETS:
        asset = Asset.objects.filter(source_system=source, external_id=external_id).first()
        if asset is None:
            asset = asset_save(asset=Asset(source_system=source, external_id=external_id, title=title, url=url))
            done.append(f"created asset {asset}")
        if not Handle.objects.filter(asset=asset).exists():
            request = handle_mint(prefix=prefix, target_url=url, asset=asset, via="demo")
            done.append(f"minted {request.full_handle}")
    return done
