import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from handles.models import Asset, Handle, Prefix
from handles.validators import ascii_upper


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]
        skip_postgeneration_save = True  # the only post-generation step adds groups, which needs no save

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw")
    is_staff = True

    @factory.post_generation
    def groups(self, create, extracted, **kwargs):
        for name in extracted or []:
            self.groups.add(Group.objects.get(name=name))


class PrefixFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prefix
        django_get_or_create = ["prefix"]

    prefix = "20.500.12345"
    site_name = "Collections Portal"
    server_url = "https://127.0.0.1:9"
    auth_identity = "300:20.500.12345/ADMIN"
    secret_env_var = "HANDLE_SECRET_TEST"
    tls_mode = Prefix.TLS.INSECURE
    hs_admin_handle = "20.500.12345/ADMIN"
    hs_admin_index = 300
    hs_admin_permissions = "111111111111"


class AssetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Asset

    source_system = "dams"
    external_id = factory.Sequence(lambda n: f"node-{n}")
    title = factory.Sequence(lambda n: f"Object {n}")
    url = factory.LazyAttribute(lambda a: f"https://dams.example.edu/{a.external_id}")


class HandleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Handle

    prefix = factory.SubFactory(PrefixFactory)
    suffix = factory.Sequence(lambda n: f"h{n}")
    suffix_key = factory.LazyAttribute(lambda h: ascii_upper(h.suffix))
    target_url = factory.Sequence(lambda n: f"https://example.org/objects/{n}")
    status = Handle.Status.ACTIVE
