"""A chain that is not the local dev chain: anvil's public keys are refused, nothing deploys
unless asked, custodial wallets do not exist there, and demo wallets are not derivable from a
username. Concurrency at the chain boundary: faucets from several processes at once, and
snapshots taken at the same moment."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import Result
from eth_account import Account
from eth_utils.crypto import keccak
from typer.testing import CliRunner

from bti_core.chain.client import ChainClient
from bti_core.chain.node import AnvilNode, free_port, rpc_call
from bti_core.chain.runtime import connect
from bti_core.chain.wallets import ANVIL_KEYS, CustodialWallets
from bti_core.cli import app
from bti_core.config import Settings
from bti_core.errors import ChainError, PaymentError

runner = CliRunner()
PUBLIC_CHAIN = 8453  # any id but 31337 stands for a real network


@pytest.fixture(scope="module")
def public_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilNode]:
    node = AnvilNode(tmp_path_factory.mktemp("pub"), port=free_port(), chain_id=PUBLIC_CHAIN)
    node.start()
    yield node
    node.stop(snapshot=False)


def _own_keys(node: AnvilNode) -> dict[str, str]:
    """Three fresh keys with gas (what an operator would bring)."""
    keys = {}
    for name in ("admin", "claims", "quoter"):
        acct = Account.create()
        rpc_call(node.url, "anvil_setBalance", [acct.address, hex(10**20)])
        keys[f"BTI_{name.upper()}_KEY"] = acct.key.hex()
    return keys


def _use_with_own_keys(node: AnvilNode, monkeypatch: pytest.MonkeyPatch) -> None:
    """BTI pointed at ``node`` (a chain that is not the local one) with keys of its own."""
    monkeypatch.setenv("BTI_RPC_URL", node.url)
    for k, v in _own_keys(node).items():
        monkeypatch.setenv(k, v)


def test_a_read_on_a_public_chain_never_deploys_with_the_dev_keys(
    public_node: AnvilNode, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BTI_RPC_URL", public_node.url)
    block = rpc_call(public_node.url, "eth_blockNumber")
    for args in (["chain", "status"], ["chain", "deploy"], ["claims", "run"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2, r.output
        assert f"chain {PUBLIC_CHAIN} is not the local dev chain" in r.output
        assert "BTI_ADMIN_KEY, BTI_CLAIMS_KEY, BTI_QUOTER_KEY" in r.output
    assert rpc_call(public_node.url, "eth_blockNumber") == block  # not one transaction
    assert not list((data_dir / "chain").glob("deployment-*.json"))


def test_on_a_public_chain_only_bti_chain_deploy_deploys(
    public_node: AnvilNode, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_with_own_keys(public_node, monkeypatch)
    monkeypatch.setenv("BTI_POOL_CAPACITY", "5000")
    status = runner.invoke(app, ["chain", "status"])
    assert status.exit_code == 2
    assert "not deployed on chain 8453" in status.output
    assert "run `bti chain deploy`" in status.output
    deployed = runner.invoke(app, ["chain", "deploy", "--seed-capital", "0"])
    assert deployed.exit_code == 0, deployed.output
    assert "reserves" in deployed.output
    again = runner.invoke(app, ["chain", "status"])
    assert again.exit_code == 0 and "0.00 BTI" in again.output
    # custodial demo wallets do not exist there: the faucet (a demo of the dev chain) says so
    faucet = runner.invoke(app, ["chain", "faucet", "alice"])
    assert faucet.exit_code == 2
    assert "the faucet is a demo of the local development chain" in faucet.output


def test_the_insurance_service_holds_no_trader_key_off_the_dev_chain(
    public_node: AnvilNode,
) -> None:
    from bti_core.policies import InsuranceService

    client = ChainClient(public_node.url)
    svc = InsuranceService(None, None, chain=client)  # type: ignore[arg-type]
    with pytest.raises(PaymentError, match="sign the purchase in your own wallet"):
        svc.wallet_of("alice")


@pytest.mark.parametrize("index", [0, 3, 4, 7, 9, 10, 57, 999])
def test_every_key_of_anvils_public_mnemonic_is_refused_off_the_local_chain(index: int) -> None:
    """anvil's ten accounts (and any further key of its published mnemonic, as `anvil
    --accounts N` makes) are public; the guard used to know only accounts 0–3."""
    from eth_account.hdaccount import key_from_seed, seed_from_mnemonic

    from bti_core.chain.wallets import ANVIL_MNEMONIC, require_safe_keys

    key = key_from_seed(seed_from_mnemonic(ANVIL_MNEMONIC, ""), f"m/44'/60'/0'/0/{index}").hex()
    require_safe_keys(31337, {"admin": key})  # the local dev chain: fine
    with pytest.raises(ChainError, match="BTI_CLAIMS_KEY still hold anvil's public") as err:
        require_safe_keys(PUBLIC_CHAIN, {"admin": Account.create().key.hex(), "claims": key})
    assert err.value.reason == "DevKeysOnPublicChain"
    require_safe_keys(PUBLIC_CHAIN, {"admin": Account.create().key.hex()})  # a key of one's own


def test_anvils_eighth_account_as_the_claims_key_is_refused_by_every_command(
    public_node: AnvilNode, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_with_own_keys(public_node, monkeypatch)
    eighth = "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356"  # account 7
    monkeypatch.setenv("BTI_CLAIMS_KEY", eighth)
    block = rpc_call(public_node.url, "eth_blockNumber")
    for args in (["chain", "status"], ["chain", "deploy"], ["claims", "run"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2, r.output
        assert "BTI_CLAIMS_KEY still hold anvil's public development keys" in r.output
    assert rpc_call(public_node.url, "eth_blockNumber") == block


def test_no_demo_runs_off_the_local_chain(
    public_node: AnvilNode, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a chain that is not 31337, with the operator's own keys: no demo markets, demo book,
    crash replay (command or the engine the Alerts page calls) or faucet (command or client),
    each refused with the reason, and nothing written."""
    from bti_core.errors import DemoOnlyError
    from bti_core.services import build_services
    from bti_core.stream.demo import replay_crash

    _use_with_own_keys(public_node, monkeypatch)
    assert runner.invoke(app, ["chain", "deploy", "--seed-capital", "0"]).exit_code == 0
    block = rpc_call(public_node.url, "eth_blockNumber")
    for args, what in (
        (["demo", "--days", "5"], "`bti demo` (synthetic markets)"),
        (["demo", "--if-missing"], "`bti demo` (synthetic markets)"),
        (["demo-book", "--policies", "3"], "`bti demo-book`"),
        (["crash", "--symbol", "BTCUSDT"], "`bti crash` (a crash replay)"),
        (["chain", "faucet", "alice"], "the faucet"),
    ):
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert f"{what} is a demo of the local development chain (31337)" in " ".join(
            r.output.split()
        ), r.output
        assert f"refused on chain {PUBLIC_CHAIN}" in " ".join(r.output.split())
    svc = build_services(Settings())
    assert not svc.is_demo_chain
    with pytest.raises(DemoOnlyError, match="a crash replay is a demo"):
        replay_crash(svc, "BTCUSDT")
    with pytest.raises(DemoOnlyError, match="the faucet is a demo"):
        svc.chain.faucet(Account.create().address, Decimal(1))
    assert rpc_call(public_node.url, "eth_blockNumber") == block  # not one transaction
    assert not (data_dir / "warehouse").exists() or not svc.warehouse.symbols()
    svc.close()


def test_connect_refuses_the_dev_keys_before_reading_anything_else(
    public_node: AnvilNode, tmp_path: Path
) -> None:
    s = Settings(data_dir=tmp_path, rpc_url=public_node.url)
    with pytest.raises(ChainError) as err:
        connect(s)
    assert err.value.reason == "DevKeysOnPublicChain"


def test_demo_wallets_are_not_derivable_from_the_username(tmp_path: Path) -> None:
    a = CustodialWallets.at(tmp_path / "a" / "wallet.secret")
    b = CustodialWallets.at(tmp_path / "b" / "wallet.secret")
    old = Account.from_key(keccak(text="bti-demo-wallet/alice"))  # what an attacker computes
    assert a.of("alice").address != old.address
    assert a.of("alice").address != b.of("alice").address  # each install its own
    assert CustodialWallets.at(tmp_path / "a" / "wallet.secret").of("alice") == a.of("alice")
    assert (tmp_path / "a" / "wallet.secret").stat().st_mode & 0o077 == 0
    assert a.of("alice").address not in {Account.from_key(k).address for k in ANVIL_KEYS}


def test_processes_creating_the_wallet_secret_at_once_agree(tmp_path: Path) -> None:
    path = tmp_path / "wallet.secret"
    code = (
        "import sys; from pathlib import Path; from bti_core.chain.wallets import "
        "CustodialWallets as W; print(W.at(Path(sys.argv[1])).of('x').address)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    addresses = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(addresses) == 1 and all(p.returncode == 0 for p in procs)


@pytest.mark.slow
def test_faucets_from_four_processes_at_once_all_land(
    anvil: AnvilNode, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the cross-process nonce lock, four parallel `bti chain faucet` failed on
    "nonce too low"."""
    monkeypatch.setenv("BTI_RPC_URL", anvil.url)
    bti = str(Path(sys.executable).parent / "bti")
    first = subprocess.run(
        [bti, "chain", "faucet", "warmup", "--amount", "1"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert first.returncode == 0, first.stderr  # deploys once for this data folder
    procs = [
        subprocess.Popen(
            [bti, "chain", "faucet", f"t{i}", "--amount", "10"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    wallets = CustodialWallets.at(data_dir / "wallet.secret")
    client = connect(Settings(data_dir=data_dir, rpc_url=anvil.url))
    assert all(client.balance(wallets.of(f"t{i}").address) == Decimal(10) for i in range(4))


def test_snapshots_taken_at_once_each_write_a_whole_state(anvil: AnvilNode) -> None:
    errors: list[BaseException] = []

    def snap() -> None:
        try:
            for _ in range(3):
                anvil.snapshot()
        except BaseException as exc:  # the old shared temp file raised FileNotFoundError
            errors.append(exc)

    threads = [threading.Thread(target=snap) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert anvil.snapshot_path.stat().st_size > 0
    assert not list(anvil.state_dir.glob(".anvil-state.*.tmp"))


def test_on_a_public_chain_a_trader_buys_with_their_own_wallet(
    public_node: AnvilNode, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BTI holds no trader key there: the trader signs the premium's EIP-2612 permit in their
    own wallet, BTI relays it (the trader needs no gas) and the policy token is theirs."""
    from datetime import UTC, datetime, timedelta

    from bti_core.market.schema import Kind
    from bti_core.market.synthetic import generate_demo_markets
    from bti_core.orders import Cover, Order
    from bti_core.policies import Permit
    from bti_core.services import build_services

    _use_with_own_keys(public_node, monkeypatch)
    connect(Settings(), deploy=True, seed_capital=Decimal(100_000))
    svc = build_services(Settings())
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    m = generate_demo_markets(start=now - timedelta(days=60), periods=24 * 60, seed=5)["BTCUSDT"]
    for kind, frame, tf in ((Kind.MARK, m.mark, "1h"), (Kind.OHLCV, m.ohlcv, "1h")):
        svc.ingestor.ingest_frame(frame, symbol="BTCUSDT", kind=kind, timeframe=tf, source="d")
    svc.risk.n_paths = 4_000
    trader = Account.create()  # the trader's own key: BTI never sees it
    # there is no faucet here (a demo): the trader's BTI come from the operator's mint
    svc.chain._mint(trader.address, Decimal(500))
    spot = Decimal(str(round(svc.risk.spot("BTCUSDT"), 2)))
    ins = svc.insurance

    def quote() -> str:
        return ins.quote(
            user_id="zoe",
            order=Order("BTCUSDT", "long", Decimal("0.05"), spot, Decimal(10)),
            cover=Cover(coverage="100", duration_hours=24),
        ).record.id

    # a permit signed by someone else's key is refused by the pool: declined, nothing taken
    qid = quote()
    req = ins.permit_request(user_id="zoe", quote_id=qid, wallet=trader.address)
    forged = Account.create().sign_typed_data(full_message=req).signature.to_0x_hex()
    with pytest.raises(PaymentError, match="no premium was taken"):
        ins.buy(
            user_id="zoe",
            quote_id=qid,
            wallet=trader.address,
            permit=Permit(forged, int(req["message"]["deadline"])),
        )
    assert svc.chain.balance(trader.address) == Decimal(500)

    # anvil's sixth account is anyone's: cover bought from it would pay whoever takes it
    public = Account.from_key("0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba")
    req = ins.permit_request(user_id="zoe", quote_id=qid, wallet=public.address)
    with pytest.raises(PaymentError, match="one of anvil's public development accounts"):
        ins.buy(
            user_id="zoe",
            quote_id=quote(),
            wallet=public.address,
            permit=Permit(
                public.sign_typed_data(full_message=req).signature.to_0x_hex(),
                int(req["message"]["deadline"]),
            ),
        )

    qid = quote()
    req = ins.permit_request(user_id="zoe", quote_id=qid, wallet=trader.address)
    assert req["domain"]["chainId"] == PUBLIC_CHAIN and req["primaryType"] == "Permit"
    signed = trader.sign_typed_data(full_message=req).signature.to_0x_hex()  # in the wallet
    policy = ins.buy(
        user_id="zoe",
        quote_id=qid,
        wallet=trader.address,
        permit=Permit(signed, int(req["message"]["deadline"])),
    )
    assert policy.status == "active" and policy.wallet == trader.address
    on_chain = svc.chain.policy(policy.chain_policy_id or 0)
    assert on_chain.owner == trader.address and on_chain.buyer == trader.address
    assert svc.chain.balance(trader.address) == Decimal(500) - policy.premium
    assert svc.chain.gas_balance(trader.address) == 0  # BTI paid the gas
    again = ins.buy(
        user_id="zoe",
        quote_id=qid,
        wallet=trader.address,
        permit=Permit(signed, int(req["message"]["deadline"])),
    )
    assert again.id == policy.id  # a second click buys nothing more
    assert svc.chain.balance(trader.address) == Decimal(500) - policy.premium

    # the same from the command line: quote, the permit to sign, buy
    import json
    import re

    def quote(side: str) -> Result:
        order = f"--symbol BTCUSDT --side {side} --quantity 0.05 --leverage 10 --coverage 100"
        order += " --hours 24"
        return runner.invoke(app, ["policies", "quote", "--user", "zoe", *order.split()])

    r = quote("long")
    assert r.exit_code == 0, r.output
    qid2 = re.search(r"quote ([0-9a-f]{32})", r.output).group(1)  # type: ignore[union-attr]
    r = runner.invoke(
        app, ["policies", "permit", qid2, "--user", "zoe", "--wallet", trader.address]
    )
    assert r.exit_code == 0, r.output
    req2 = json.loads(r.output)
    sig2 = trader.sign_typed_data(full_message=req2).signature.to_0x_hex()
    r = runner.invoke(
        app,
        [
            "policies",
            "buy",
            qid2,
            "--user",
            "zoe",
            "--wallet",
            trader.address,
            "--signature",
            sig2,
            "--deadline",
            str(req2["message"]["deadline"]),
        ],
    )
    assert r.exit_code == 0 and "is active until" in r.output, r.output
    bad = quote("sideways")
    assert bad.exit_code == 2 and "side must be one of long, short" in bad.output
    svc.close()


def test_one_key_used_from_two_hosts_at_once_retries_a_taken_nonce(
    chain: ChainClient, tmp_path: Path
) -> None:
    """Two clients whose nonce locks do not see each other (two hosts) send from one key at
    once: a nonce the other host took is retried with the next, and every transfer lands."""
    from bti_core.chain.nonces import NonceLock

    hosts = [
        ChainClient(chain.url, chain.deployment, nonce_lock=NonceLock(tmp_path / f"host{i}"))
        for i in range(2)
    ]
    targets = [Account.create().address for _ in range(8)]
    errors: list[BaseException] = []

    def mint(client: ChainClient, to: str) -> None:
        try:
            client.faucet(to, Decimal(3), gas=Decimal(0))
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=mint, args=(hosts[i % 2], to)) for i, to in enumerate(targets)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [], errors
    assert all(chain.balance(to) == Decimal(3) for to in targets)


def test_the_dashboard_has_no_demo_accounts_or_crash_replay_off_the_local_chain(
    public_node: AnvilNode, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's demo accounts are not made there, and ones made earlier on the local chain
    (published passwords) sign nobody in; a real underwriter's Alerts page offers no replay."""
    from streamlit.testing.v1 import AppTest

    from bti_core.auth import add_user, ensure_demo_users, get_user
    from bti_core.db.engine import make_engine, migrate
    from tests.dashboard.conftest import sign_in

    _use_with_own_keys(public_node, monkeypatch)
    alerts = str(Path(__file__).resolve().parents[2] / "pages" / "alerts.py")
    at = sign_in(AppTest.from_file(alerts, default_timeout=60), "underwriter", "underwriter-demo")
    assert at.error and at.error[0].value == "Wrong username or password."
    assert not any("Demo accounts" in c.value for c in at.caption)
    db = make_engine()
    migrate(db)
    assert get_user(db, "underwriter") is None and get_user(db, "trader") is None

    ensure_demo_users(db)  # made earlier, on the local chain, in the same database
    at = sign_in(AppTest.from_file(alerts, default_timeout=60), "underwriter", "underwriter-demo")
    assert "is a demo account (its password is published)" in at.error[0].value
    assert not [b for b in at.button if b.key == "bti_sign_out"]  # still signed out

    add_user(db, username="uma", name="Uma", role="underwriter", password="a-real-secret-9")
    at = sign_in(AppTest.from_file(alerts, default_timeout=60), "uma", "a-real-secret-9")
    assert not at.exception
    assert any(
        "Crash replays are a demo of the local development chain" in i.value for i in at.info
    )
    assert not [b for b in at.button if b.label == "Replay"]
    db.dispose()


def test_a_deployment_made_by_an_older_bti_is_refused_with_what_to_do(
    anvil: AnvilNode, data_dir: Path
) -> None:
    """A data folder whose pool an older BTI deployed (without the functions this one calls)
    used to fail page by page with a bare revert."""
    s = Settings(data_dir=data_dir, rpc_url=anvil.url)
    client = connect(s)  # deploys this version
    assert client.outdated() == []
    # the pool's code as an older version's: another size
    rpc_call(anvil.url, "anvil_setCode", [client.deployment.pool, "0x6000"])
    with pytest.raises(
        ChainError,
        match=r"deployed by an older BTI: InsurancePool changed since; this is the local demo "
        r"chain: move .* aside",
    ):
        connect(s)
