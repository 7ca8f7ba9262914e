# ptreloc — `make` (or `make help`) lists the targets.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
NODES  ?= 2
# the guest suite under TCG takes 15-30 min (census/drain alone ~10); numa-vm's own default is 900 s
VM_TIMEOUT ?= 3600

.DEFAULT_GOAL := help
.PHONY: help deps venv build test test-host test-vm test-sanitize test-vm-sanitize check-wheel bench demo lint clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18

deps: ## install the system packages the build and the NUMA test bed need (apt, as root)
	scripts/install-deps

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "cffi>=1.16" "setuptools>=77" wheel
	touch $@

venv: $(VENV)/.stamp ## create the virtual environment in .venv

build: $(VENV)/.stamp ## compile the C core and install ptreloc (editable, test + plot + lint extras) into .venv
	flock $(VENV)/.build.lock $(PY) -m pip install -q --no-build-isolation -e '.[test,plot,lint]'

# test-vm is reached through a sub-make: SKIP_BUILD=1 keeps it from installing a second time
test: deps build ## run every test: host suite, then the multi-node suite inside the NUMA guest
	$(PY) -m pytest -m 'not multinode'
	$(MAKE) test-vm SKIP_BUILD=1

test-host: build ## run the host suite only
	$(PY) -m pytest -m 'not multinode'

# When the guest cannot be had (scripts/numa-vm --prepare exits 77 and prints why), the
# multi-node tests run on the host, where tests/conftest.py skips them with that reason - or
# fails them when CI is set. The guest cannot write bytecode (read-only tree), and pytest's
# assertion rewriting of the test modules and plugins costs ~25 s under TCG: collecting on the
# host first leaves the rewritten .pyc files (gitignored __pycache__) for the guest to read.
test-vm: $(if $(SKIP_BUILD),,build) ## run the multi-node suite inside a $(NODES)-node QEMU guest (scripts/numa-vm)
	@reason=$$(scripts/numa-vm --prepare) && rc=0 || rc=$$?; \
	if [ $$rc -eq 77 ]; then \
	    PTRELOC_VM_UNAVAILABLE="$$reason" $(PY) -m pytest -m multinode -p no:cacheprovider; \
	elif [ $$rc -ne 0 ]; then exit $$rc; \
	else \
	    PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -q --co -m multinode -p no:cacheprovider >/dev/null; \
	    echo "scripts/numa-vm --nodes $(NODES) --timeout $(VM_TIMEOUT) -- $(PY) -m pytest -m multinode -p no:cacheprovider"; \
	    scripts/numa-vm --nodes $(NODES) --timeout $(VM_TIMEOUT) -- $(PY) -m pytest -m multinode -p no:cacheprovider; \
	fi

# The C core under ASan+UBSan - its own tests, the relocation engine (with the property test
# against the model), the mirror, migrate (its CLI subprocesses load the sanitized copy too) and
# the stress, the kernel-table reader and the ptrace injector - built into a scratch copy (the
# in-tree build is untouched).
# ThreadSanitizer runs the tests marked `tsan` (@pytest.mark.tsan: the threaded core tests and
# the relocation stress; registered in pyproject.toml) wherever they are in tests/ - mark a
# test to add it, there is no list to keep here.  TSAN_SELECT narrows or widens the selection.
SANITIZE_TESTS ?= tests/test_core.py tests/test_core_model.py tests/test_relocate.py tests/test_relocate_property.py tests/test_relocate_list.py tests/test_relocate_vec.py tests/test_mirror.py tests/test_mirror_span.py tests/test_migrate.py tests/test_stress.py tests/test_kernel_tables.py tests/test_inject.py tests/test_lock_order.py tests/test_pool.py tests/test_pagescan.py tests/test_runs.py tests/test_proc.py tests/test_thp.py
TSAN_SELECT ?= tsan and not multinode
test-sanitize: build ## core tests under AddressSanitizer+UBSan, and the tests marked tsan under ThreadSanitizer
	PY=$(abspath $(PY)) scripts/test-sanitize asan -m 'not multinode' $(addprefix $(CURDIR)/,$(SANITIZE_TESTS))
	PY=$(abspath $(PY)) scripts/test-sanitize tsan -m '$(TSAN_SELECT)' $(CURDIR)/tests

# The multi-node suite inside the 2-node guest with the core under ASan+UBSan (a sanitized copy
# of the package under .sanitize/, which the guest sees; scripts/test-sanitize asan-vm).  The
# watch-follows-migratepages test is left to the plain run: it races a 40 s watch against
# migratepages, and under ASan in TCG the watch's looks are slow enough to pin the pages it
# needs moved (seen: 4,343 of 4,454 left on node 0); its C paths run in the other tests.
VM_SANITIZE_TESTS ?= tests/test_mixed_placement_multinode.py tests/test_relocate_multinode.py tests/test_migrate_multinode.py tests/test_core_multinode.py tests/test_frames_multinode.py
test-vm-sanitize: build ## the multi-node relocation/migrate tests in the guest under AddressSanitizer+UBSan
	PY=$(abspath $(PY)) scripts/test-sanitize asan-vm -m multinode -k 'not watch_follows' $(addprefix $(CURDIR)/,$(VM_SANITIZE_TESTS))

# The defect this guards against: an installed ptreloc that reached into the checkout (scripts/)
# and failed as soon as it ran from anywhere else.  Needs the package registry (pip, build
# isolation: the wheel is built as `pip install .` builds it).
check-wheel: ## build a wheel, install it into a fresh venv outside the checkout, run doctor, bench --quick and stress from there
	PYTHON=$(PYTHON) scripts/check-wheel

# The README's first command: everything from a fresh clone to ptreloc's main job.
demo: deps build ## install deps, build, migrate a real workload node 0 -> 1 (in the 2-node guest when this machine has one node)
	@n=$$($(PY) -c 'from ptreloc import numa; t = numa.topology(); print(len(t.online & t.with_memory))'); \
	if [ "$$n" -ge 2 ]; then scripts/demo; \
	else echo "this machine has $$n NUMA node(s) with memory: running the demo in a 2-node guest (scripts/numa-vm)"; \
	    scripts/numa-vm --nodes 2 --timeout 600 -- scripts/demo; fi

# The full benchmark (several minutes on 2 cores; every suite, see docs/BENCHMARKS.md). The JSON
# goes to $(BENCH_JSON); BENCH_ARGS adds options, e.g. BENCH_ARGS="--in-vm --plot bench.png".
BENCH_JSON ?= docs/bench.json
BENCH_ARGS ?=
bench: build ## run every benchmark suite; results in docs/bench.json (docs/BENCHMARKS.md)
	$(PY) -m ptreloc bench --output $(BENCH_JSON) $(BENCH_ARGS)

# scripts/numa-vm is Python without a .py suffix: named, as ruff only finds *.py by itself.
# ruff and mypy come with the lint extra (make build); mypy's scope and strictness are in
# pyproject.toml ([tool.mypy]: the whole package, strict).
lint: build ## ruff over the Python sources (package, tests, build script, scripts); mypy --strict over the package
	$(PY) -m ruff check ptreloc tests csrc/build.py scripts/*.py scripts/numa-vm
	$(PY) -m mypy

clean: ## remove build products (keeps .venv and the test-bed cache)
	rm -rf build *.egg-info ptreloc/_core*.so ptreloc/_core*.c ptreloc/_core*.o
