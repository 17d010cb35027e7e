/**
 * The Buy page's browser wallet: a Streamlit component (custom components v2: it runs in the
 * page, where an EIP-1193 wallet such as MetaMask or Rabby injects `window.ethereum`).
 *
 * Python hands it `data`: the chain BTI is on, the connected account (once known) and, for a
 * quote, the EIP-2612 permit of its premium as EIP-712 typed data. It
 *   - connects (`eth_requestAccounts`), checks the wallet's chain (`eth_chainId`, asking the
 *     wallet to switch with `wallet_switchEthereumChain` when it is another) and sets the
 *     state value `account`;
 *   - signs the permit (`eth_signTypedData_v4`) and sets the trigger value `signed`
 *     ({signature, deadline, account, quote}); BTI relays the purchase, the trader pays no gas.
 * A refusal in the wallet (EIP-1193 error 4001) or any other error is shown here, in words.
 */

interface Eip1193 {
  request(args: { method: string; params?: unknown[] }): Promise<unknown>;
}

interface WalletData {
  chainId: number;
  account: string | null;
  quote: string | null;
  permit: { message: { deadline: number | string } } | null;
  premium: string | null;
}

interface ComponentArgs {
  data: WalletData;
  parentElement: HTMLElement | ShadowRoot;
  setStateValue(name: string, value: unknown): void;
  setTriggerValue(name: string, value: unknown): void;
}

function provider(): Eip1193 | null {
  const w = window as unknown as { ethereum?: Eip1193 };
  return w.ethereum ?? null;
}

function say(error: unknown): string {
  const e = error as { code?: number; message?: string };
  if (e && e.code === 4001) return "You declined in your wallet: nothing was signed or paid.";
  return `Your wallet answered: ${e && e.message ? e.message : String(error)}`;
}

async function onChain(eth: Eip1193, chainId: number): Promise<void> {
  const current = parseInt(String(await eth.request({ method: "eth_chainId" })), 16);
  if (current === chainId) return;
  try {
    await eth.request({
      method: "wallet_switchEthereumChain",
      params: [{ chainId: "0x" + chainId.toString(16) }],
    });
  } catch (error) {
    throw new Error(
      `your wallet is on chain ${current}; BTI is on chain ${chainId}: switch networks in it`,
    );
  }
}

export default function (component: ComponentArgs): () => void {
  const { data, parentElement, setStateValue, setTriggerValue } = component;
  const root = document.createElement("div");
  root.className = "bti-wallet";
  parentElement.appendChild(root);
  const line = document.createElement("p");
  const button = document.createElement("button");
  const status = document.createElement("p");
  status.setAttribute("role", "status");
  root.append(line, button, status);

  const eth = provider();
  if (eth === null) {
    line.textContent =
      "No browser wallet found: install MetaMask, Rabby or another EIP-1193 wallet to buy " +
      "from your own address.";
    button.hidden = true;
    return () => root.remove();
  }
  const account = data.account;
  if (account === null) {
    line.textContent = `Connect the wallet that pays the premium (chain ${data.chainId}).`;
    button.textContent = "Connect wallet";
    button.onclick = async () => {
      button.disabled = true;
      status.textContent = "Waiting for your wallet…";
      try {
        const accounts = (await eth.request({ method: "eth_requestAccounts" })) as string[];
        if (!accounts || accounts.length === 0) throw new Error("no account was shared");
        await onChain(eth, data.chainId);
        status.textContent = "";
        setStateValue("account", accounts[0]);
      } catch (error) {
        status.textContent = say(error);
        button.disabled = false;
      }
    };
  } else if (data.permit !== null && data.quote !== null) {
    line.textContent = `Wallet ${account.slice(0, 8)}…${account.slice(-6)} pays ${data.premium} BTI.`;
    button.textContent = `Sign and buy for ${data.premium} BTI`;
    button.onclick = async () => {
      button.disabled = true;
      status.textContent = "Sign the permit in your wallet…";
      try {
        await onChain(eth, data.chainId);
        const signature = await eth.request({
          method: "eth_signTypedData_v4",
          params: [account, JSON.stringify(data.permit)],
        });
        status.textContent = "Signed: BTI is sending the purchase…";
        setTriggerValue("signed", {
          signature,
          deadline: Number(data.permit!.message.deadline),
          account,
          quote: data.quote,
        });
      } catch (error) {
        status.textContent = say(error);
        button.disabled = false;
      }
    };
  } else {
    line.textContent = `Wallet ${account.slice(0, 8)}…${account.slice(-6)} connected.`;
    button.textContent = "Use another wallet";
    button.onclick = () => setStateValue("account", null);
  }
  return () => root.remove();
}
