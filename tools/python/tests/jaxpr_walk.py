"""The equations of a jaxpr and of the jaxprs nested in them (custom_vjp's, jit's), for tests
that read the FFI calls a traced tfla.jax function makes."""


def eqns(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for p in eqn.params.values():
            inner = getattr(p, "jaxpr", p)
            if hasattr(inner, "eqns"):
                yield from eqns(inner)


def ffi_calls(jaxpr):
    """The ffi_call equations of jaxpr, nested ones included."""
    return [e for e in eqns(jaxpr) if e.primitive.name == "ffi_call"]
