// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC4626} from "@openzeppelin/contracts/token/ERC20/extensions/ERC4626.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {BTIPolicy} from "./BTIPolicy.sol";

/// @title BTI insurance pool
/// @notice Holds the reserves in BTI. Capital providers deposit and withdraw through ERC-4626
///         shares (bpBTI) whose value moves with premiums in and claims out; traders buy
///         policies at a price the BTI quoter signed (EIP-712); the claims service pays claims.
/// @dev Accounting: `reserves` = deposits + premiums − refunds − payouts − withdrawals, kept apart from
///      the token balance so that tokens sent here directly change nothing. Cover sold locks
///      its coverage; only reserves above the locked amount (`freeReserves`) can be withdrawn
///      or back new cover.
///
///      Withdrawals wait out a cooldown. A provider first requests one (`requestWithdrawal`),
///      which moves the shares into the pool's escrow: they stay invested, take premiums and
///      bear every claim paid meanwhile, and cannot be moved to another account whose request
///      is further along. After `withdrawalCooldown` the request may be taken (`withdraw` or
///      `redeem`, priced when taken) within `WITHDRAWAL_WINDOW`; after that it lapses and the
///      shares can only be asked back (`cancelWithdrawal`) or requested again. Claims come
///      first: they are paid from the cover their policies lock, which no withdrawal can take,
///      and a claim opened while a request waits lowers the price the request is taken at: the
///      claims service books each open claim's reserve (`setClaimReserves`, an insurer's case
///      reserve) and `totalAssets` is the reserves less the claims reserved, so a provider who
///      leaves before an opened claim is paid leaves with their share of it.
contract InsurancePool is ERC4626, AccessControl, Pausable, ReentrancyGuard, EIP712 {
    using SafeERC20 for IERC20;

    /// @notice Role that pays claims and releases cover (the BTI claims service).
    bytes32 public constant CLAIMS_ROLE = keccak256("CLAIMS_ROLE");
    /// @notice Role whose signature makes a quote buyable (the BTI pricing service).
    bytes32 public constant QUOTER_ROLE = keccak256("QUOTER_ROLE");
    /// @notice Role allowed to pause and unpause the pool.
    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");

    bytes32 private constant QUOTE_TYPEHASH = keccak256(
        "Quote(address holder,bytes32 termsHash,uint256 coverage,uint256 premium,uint64 expiry,uint64 deadline)"
    );
    bytes32 private constant AMENDMENT_TYPEHASH = keccak256(
        "Amendment(uint256 policyId,bytes32 fromTerms,bytes32 termsHash,uint256 coverage,uint256 charge,uint256 refund,uint64 expiry,uint64 deadline)"
    );

    /// @notice Time after a policy's expiry during which only the claims service may release
    ///         its cover (a claim triggered inside the window may still be in review).
    uint64 public constant CLAIM_GRACE = 7 days;

    /// @notice Time a ready withdrawal request stays open; after it the request lapses, so a
    ///         request made "just in case" cannot be kept ready for the next crash.
    uint64 public constant WITHDRAWAL_WINDOW = 2 days;

    /// @notice Time between a withdrawal request and the first moment it can be taken. Fixed at
    ///         deployment: a pool that could shorten it could let its capital run from a crash.
    uint64 public immutable withdrawalCooldown;

    enum Status {
        None,
        Active,
        Paid,
        Released
    }

    struct Policy {
        address buyer;
        uint64 start;
        uint64 expiry;
        Status status;
        uint256 coverage;
        uint256 premium;
        uint256 paid;
        bytes32 termsHash;
        uint256 reserved; // the reserve of the open claim on this policy (0: none open)
    }

    /// @notice A provider's pending withdrawal: `shares` held in escrow, takeable from
    ///         `readyAt` until `expiresAt` (unix seconds).
    struct WithdrawalRequest {
        uint256 shares;
        uint64 readyAt;
        uint64 expiresAt;
    }

    /// @notice A quote as the quoter signs it.
    struct Quote {
        address holder;
        bytes32 termsHash;
        uint256 coverage;
        uint256 premium;
        uint64 expiry;
        uint64 deadline;
    }

    /// @notice A change to an active policy as the quoter signs it: from the policy's current
    ///         terms (`fromTerms`, so it applies once and only to the state it was priced on)
    ///         to new terms with `coverage` until `expiry`, the holder paying `charge` and
    ///         receiving `refund` now. `coverage` 0 cancels the policy.
    struct Amendment {
        uint256 policyId;
        bytes32 fromTerms;
        bytes32 termsHash;
        uint256 coverage;
        uint256 charge;
        uint256 refund;
        uint64 expiry;
        uint64 deadline;
    }

    BTIPolicy public immutable policyToken;
    uint256 public reserves;
    uint256 public lockedCoverage;
    uint256 public premiumsIn;
    /// @notice Unused premium given back by amendments and cancellations.
    uint256 public premiumsRefunded;
    uint256 public claimsPaid;
    uint256 public capitalIn;
    uint256 public capitalOut;
    uint256 public policyCount;
    mapping(uint256 id => Policy) private _policies;
    mapping(bytes32 termsHash => uint256 id) public policyIdByTerms;
    mapping(address owner => WithdrawalRequest) private _requests;
    /// @notice Shares held in escrow by pending withdrawal requests.
    uint256 public requestedShares;
    /// @notice The open claims' reserves (`setClaimReserves`), netted out of `totalAssets`.
    uint256 public claimsReserved;

    /// @notice A policy was bought: `premium` taken from `holder`, `coverage` locked.
    event PolicyPurchased(
        uint256 indexed policyId,
        address indexed holder,
        bytes32 indexed termsHash,
        uint256 coverage,
        uint256 premium,
        uint64 expiry
    );
    /// @notice A claim on `policyId` paid `amount` to the policy token's owner `to`.
    event ClaimPaid(uint256 indexed policyId, address indexed to, uint256 amount, bytes32 claimRef);
    /// @notice A policy's cover was released without a claim (expired or closed).
    /// @notice A batch payout passed over a policy that is no longer active (already paid).
    event ClaimSkipped(uint256 indexed policyId, Status status, bytes32 claimRef);

    event CoverReleased(uint256 indexed policyId, uint256 coverage);
    /// @notice A policy was changed (extended, raised) or, with `coverage` 0, cancelled: the
    ///         holder paid `charge` and received `refund`.
    event PolicyAmended(
        uint256 indexed policyId,
        bytes32 indexed termsHash,
        uint256 coverage,
        uint64 expiry,
        uint256 charge,
        uint256 refund
    );
    /// @notice Capital came in from `provider` for `shares` pool shares.
    event CapitalDeposited(address indexed provider, uint256 assets, uint256 shares);
    /// @notice Capital went out to `receiver`, burning `shares` of `provider`.
    event CapitalWithdrawn(address indexed provider, address indexed receiver, uint256 assets, uint256 shares);
    /// @notice `provider` asked to withdraw: `shares` (all its pending shares) in escrow,
    ///         takeable from `readyAt` until `expiresAt`.
    event WithdrawalRequested(address indexed provider, uint256 shares, uint64 readyAt, uint64 expiresAt);
    /// @notice `provider`'s pending request was cancelled and its `shares` given back.
    event WithdrawalCancelled(address indexed provider, uint256 shares);
    /// @notice Part of a policy's cover was paid (`payClaimPart`): it stays active with
    ///         `coverage` under new terms `termsHash`.
    event CoverReduced(uint256 indexed policyId, bytes32 termsHash, uint256 coverage);
    /// @notice An open claim's reserve on `policyId` became `reserved` (0: released); the
    ///         pool's open claims now reserve `totalReserved`.
    event ClaimReserveSet(uint256 indexed policyId, uint256 reserved, uint256 totalReserved);

    error InsurancePoolZeroAmount();
    error InsurancePoolLengthMismatch(uint256 policyIds, uint256 amounts, uint256 claimRefs);
    error InsurancePoolQuoteExpired(uint64 deadline, uint256 nowTs);
    error InsurancePoolBadExpiry(uint64 expiry);
    error InsurancePoolNotQuoteHolder(address holder, address caller);
    error InsurancePoolBadQuoteSignature(address signer);
    error InsurancePoolPolicyExists(bytes32 termsHash, uint256 policyId);
    error InsurancePoolInsufficientCapacity(uint256 requested, uint256 available);
    error InsurancePoolUnknownPolicy(uint256 policyId);
    error InsurancePoolPolicyNotActive(uint256 policyId, Status status);
    error InsurancePoolPayoutAboveCoverage(uint256 amount, uint256 coverage);
    error InsurancePoolPayoutAboveFreeReserves(uint256 amount, uint256 available);
    error InsurancePoolReleaseTooEarly(uint256 policyId, uint64 allowedFrom);
    error InsurancePoolWithdrawalAboveFree(uint256 requested, uint256 free);
    error InsurancePoolNoWithdrawalRequest(address owner);
    error InsurancePoolWithdrawalNotReady(address owner, uint64 readyAt);
    error InsurancePoolWithdrawalLapsed(address owner, uint64 expiresAt);
    error InsurancePoolAboveRequest(address owner, uint256 shares, uint256 requested);
    error InsurancePoolRequestAboveShares(address owner, uint256 shares, uint256 held);
    error InsurancePoolNotPolicyHolder(uint256 policyId, address holder, address caller);
    error InsurancePoolStaleAmendment(uint256 policyId, bytes32 current, bytes32 priced);
    error InsurancePoolPolicyEnded(uint256 policyId, uint64 expiry);
    error InsurancePoolRefundAbovePremium(uint256 refund, uint256 premium);
    error InsurancePoolReserveAboveCoverage(uint256 policyId, uint256 reserve, uint256 coverage);
    error InsurancePoolClaimOpen(uint256 policyId, uint256 reserved);

    /// @param asset_ The BTI token.
    /// @param policyToken_ The policy NFT, whose ownership must then pass to this pool.
    /// @param admin Receives the admin and pauser roles.
    /// @param claims The claims service's address.
    /// @param quoter The pricing service's signing address.
    /// @param withdrawalCooldown_ Seconds between a withdrawal request and its first moment.
    constructor(
        IERC20 asset_,
        BTIPolicy policyToken_,
        address admin,
        address claims,
        address quoter,
        uint64 withdrawalCooldown_
    ) ERC20("BTI Pool Share", "bpBTI") ERC4626(asset_) EIP712("BTI InsurancePool", "1") {
        policyToken = policyToken_;
        withdrawalCooldown = withdrawalCooldown_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(PAUSER_ROLE, admin);
        _grantRole(CLAIMS_ROLE, claims);
        _grantRole(QUOTER_ROLE, quoter);
    }

    // ------------------------------------------------------------------ policies

    /// @notice Buy the policy described by a quote the quoter signed: pays `q.premium` in BTI
    ///         (approve the pool first), locks `q.coverage` and mints the policy token to the
    ///         caller.
    /// @param q The quote; `q.holder` must be the caller and `q.termsHash` unused.
    /// @param signature The quoter's EIP-712 signature of `q`.
    /// @return policyId The new policy's id (also the policy token's id).
    function buyPolicy(Quote calldata q, bytes calldata signature)
        external
        nonReentrant
        whenNotPaused
        returns (uint256 policyId)
    {
        if (q.holder != msg.sender) revert InsurancePoolNotQuoteHolder(q.holder, msg.sender);
        policyId = _buy(q, signature);
    }

    /// @notice Buy the policy of a quote for `q.holder`, who authorised its premium with an
    ///         EIP-2612 permit signed in their own wallet: anyone may relay it (BTI does, so the
    ///         holder needs no gas), and the policy token is minted to the holder.
    /// @dev The permit is tried, not required: if someone front-ran it, the allowance it set
    ///      is there all the same (OpenZeppelin's advice for permits); without an allowance
    ///      the premium's transfer reverts with ERC20InsufficientAllowance.
    /// @param q The quote; `q.termsHash` unused.
    /// @param signature The quoter's EIP-712 signature of `q`.
    /// @param permitDeadline The permit's deadline (unix seconds).
    /// @param v The permit signature's recovery id.
    /// @param r The permit signature's r.
    /// @param s The permit signature's s.
    /// @return policyId The new policy's id (also the policy token's id).
    function buyPolicyWithPermit(
        Quote calldata q,
        bytes calldata signature,
        uint256 permitDeadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external nonReentrant whenNotPaused returns (uint256 policyId) {
        try IERC20Permit(asset()).permit(q.holder, address(this), q.premium, permitDeadline, v, r, s) {}
        catch {}
        policyId = _buy(q, signature);
    }

    /// @notice Pay a claim on `policyId` to the current owner of its policy token, once.
    /// @dev Only CLAIMS_ROLE. At most the coverage, and never more than the reserves not locked
    ///      by other policies' cover (this policy's own lock is what it pays from); releases the
    ///      cover.
    /// @param amount Payout in token units (partial payouts allowed; the policy then closes).
    /// @param claimRef The off-chain claim's id, hashed.
    function payClaim(uint256 policyId, uint256 amount, bytes32 claimRef)
        external
        nonReentrant
        whenNotPaused
        onlyRole(CLAIMS_ROLE)
    {
        _pay(_active(policyId), policyId, amount, claimRef);
    }

    /// @notice Pay part of a policy's cover — a partial liquidation's share — and keep the
    ///         rest active: `amount` to the policy token's owner, the cover lowered to
    ///         `coverage` under new terms `termsHash` (the remaining position's). What is paid
    ///         and what is left never exceed the cover there was; the new terms must be unused,
    ///         so a part sent again after a crash is refused, never paid twice.
    /// @dev Only CLAIMS_ROLE. The claim's reserve is released; the cover stays locked.
    function payClaimPart(uint256 policyId, uint256 amount, uint256 coverage, bytes32 termsHash, bytes32 claimRef)
        external
        nonReentrant
        whenNotPaused
        onlyRole(CLAIMS_ROLE)
    {
        Policy storage p = _active(policyId);
        if (amount == 0 || coverage == 0) revert InsurancePoolZeroAmount();
        if (amount + coverage > p.coverage) revert InsurancePoolPayoutAboveCoverage(amount + coverage, p.coverage);
        uint256 existing = policyIdByTerms[termsHash];
        if (existing != 0) revert InsurancePoolPolicyExists(termsHash, existing);
        uint256 available = reserves - (lockedCoverage - p.coverage);
        if (amount > available) revert InsurancePoolPayoutAboveFreeReserves(amount, available);
        _unreserve(p, policyId);
        lockedCoverage = lockedCoverage - p.coverage + coverage;
        p.coverage = coverage;
        p.paid += amount;
        p.termsHash = termsHash;
        policyIdByTerms[termsHash] = policyId;
        reserves -= amount;
        claimsPaid += amount;
        address to = policyToken.ownerOf(policyId);
        IERC20(asset()).safeTransfer(to, amount);
        emit ClaimPaid(policyId, to, amount, claimRef);
        emit CoverReduced(policyId, termsHash, coverage);
    }

    /// @notice Pay many claims in one transaction, each exactly as `payClaim` would.
    /// @dev Only CLAIMS_ROLE. A policy no longer active (paid or released by an earlier
    ///      transaction, or earlier in this batch) is skipped with `ClaimSkipped`, so a batch
    ///      sent again after a crash pays nobody twice and holds nobody up; every other refusal
    ///      (unknown policy, zero, above coverage or free reserves) reverts the whole batch,
    ///      which the caller then pays claim by claim to learn which one was refused.
    function payClaims(uint256[] calldata policyIds, uint256[] calldata amounts, bytes32[] calldata claimRefs)
        external
        nonReentrant
        whenNotPaused
        onlyRole(CLAIMS_ROLE)
    {
        uint256 n = policyIds.length;
        if (amounts.length != n || claimRefs.length != n) {
            revert InsurancePoolLengthMismatch(n, amounts.length, claimRefs.length);
        }
        for (uint256 i = 0; i < n; ++i) {
            Policy storage p = _policies[policyIds[i]];
            if (p.status == Status.None) revert InsurancePoolUnknownPolicy(policyIds[i]);
            if (p.status != Status.Active) {
                emit ClaimSkipped(policyIds[i], p.status, claimRefs[i]);
                continue;
            }
            _pay(p, policyIds[i], amounts[i], claimRefs[i]);
        }
    }

    /// @notice Book the reserves of open claims: each active policy's reserve becomes
    ///         `amounts[i]` (at most its coverage; 0 releases it, as for a denied claim).
    ///         The reserves are netted out of `totalAssets`, so the share price falls when a
    ///         claim opens, not when it is paid, and rises back if it is denied.
    /// @dev Only CLAIMS_ROLE; allowed while paused (a reserve only protects the providers who
    ///      stay). Setting, not adding, makes a call sent twice after a crash harmless. A
    ///      policy no longer active (paid or released) holds no reserve and is skipped.
    function setClaimReserves(uint256[] calldata policyIds, uint256[] calldata amounts)
        external
        nonReentrant
        onlyRole(CLAIMS_ROLE)
    {
        uint256 n = policyIds.length;
        if (amounts.length != n) revert InsurancePoolLengthMismatch(n, amounts.length, n);
        uint256 total = claimsReserved;
        for (uint256 i = 0; i < n; ++i) {
            Policy storage p = _policies[policyIds[i]];
            if (p.status == Status.None) revert InsurancePoolUnknownPolicy(policyIds[i]);
            if (p.status != Status.Active || p.reserved == amounts[i]) continue;
            if (amounts[i] > p.coverage) {
                revert InsurancePoolReserveAboveCoverage(policyIds[i], amounts[i], p.coverage);
            }
            total = total - p.reserved + amounts[i];
            p.reserved = amounts[i];
            emit ClaimReserveSet(policyIds[i], amounts[i], total);
        }
        claimsReserved = total;
    }

    /// @notice Release an unclaimed policy's cover so the capital backs new policies again.
    /// @dev The claims service may release at any time (it knows no claim is pending); anyone
    ///      may once CLAIM_GRACE has passed after expiry and no claim's reserve is booked.
    function releaseCover(uint256 policyId) external nonReentrant {
        Policy storage p = _active(policyId);
        if (!hasRole(CLAIMS_ROLE, msg.sender)) {
            uint64 allowedFrom = p.expiry + CLAIM_GRACE;
            if (block.timestamp < allowedFrom) revert InsurancePoolReleaseTooEarly(policyId, allowedFrom);
            if (p.reserved > 0) revert InsurancePoolClaimOpen(policyId, p.reserved);
        }
        _unreserve(p, policyId);
        p.status = Status.Released;
        lockedCoverage -= p.coverage;
        emit CoverReleased(policyId, p.coverage);
    }

    /// @notice Change an active, unexpired policy as the quoter priced it (`Amendment`): only
    ///         the policy token's holder, once, from the terms it was priced on. Extending or
    ///         raising locks the new coverage (it must fit the free reserves); coverage 0
    ///         cancels and releases the cover. `charge` is taken from the holder (approve the
    ///         pool first), `refund` sent to them; a refund never exceeds the premium paid.
    function amendPolicy(Amendment calldata a, bytes calldata signature) external nonReentrant whenNotPaused {
        if (block.timestamp > a.deadline) revert InsurancePoolQuoteExpired(a.deadline, block.timestamp);
        Policy storage p = _active(a.policyId);
        if (block.timestamp >= p.expiry) revert InsurancePoolPolicyEnded(a.policyId, p.expiry);
        address holder = policyToken.ownerOf(a.policyId);
        if (holder != msg.sender) revert InsurancePoolNotPolicyHolder(a.policyId, holder, msg.sender);
        if (p.termsHash != a.fromTerms) revert InsurancePoolStaleAmendment(a.policyId, p.termsHash, a.fromTerms);
        if (p.reserved > 0) revert InsurancePoolClaimOpen(a.policyId, p.reserved);
        address signer = ECDSA.recover(_hashTypedDataV4(_amendmentHash(a)), signature);
        if (!hasRole(QUOTER_ROLE, signer)) revert InsurancePoolBadQuoteSignature(signer);
        uint256 premium = p.premium + a.charge;
        if (a.refund > premium) revert InsurancePoolRefundAbovePremium(a.refund, premium);

        uint256 locked = lockedCoverage - p.coverage; // the other policies' cover
        uint256 room = reserves + a.charge - locked; // what this policy's cover and refund may use
        if (a.refund > room) revert InsurancePoolInsufficientCapacity(a.refund, room);
        if (a.coverage == 0) {
            p.status = Status.Released;
            emit CoverReleased(a.policyId, p.coverage);
        } else {
            if (a.expiry <= block.timestamp) revert InsurancePoolBadExpiry(a.expiry);
            uint256 existing = policyIdByTerms[a.termsHash];
            if (existing != 0) revert InsurancePoolPolicyExists(a.termsHash, existing);
            if (a.coverage > room - a.refund) {
                revert InsurancePoolInsufficientCapacity(a.coverage, room - a.refund);
            }
            locked += a.coverage;
            p.coverage = a.coverage;
            p.expiry = a.expiry;
            p.termsHash = a.termsHash;
            policyIdByTerms[a.termsHash] = a.policyId;
        }
        lockedCoverage = locked;
        p.premium = premium - a.refund;
        reserves = reserves + a.charge - a.refund;
        premiumsIn += a.charge;
        premiumsRefunded += a.refund;
        if (a.charge > 0) IERC20(asset()).safeTransferFrom(msg.sender, address(this), a.charge);
        if (a.refund > 0) IERC20(asset()).safeTransfer(msg.sender, a.refund);
        emit PolicyAmended(a.policyId, a.termsHash, a.coverage, a.expiry, a.charge, a.refund);
    }

    /// @notice The EIP-712 digest the quoter signs for `a`.
    function amendmentDigest(Amendment calldata a) external view returns (bytes32) {
        return _hashTypedDataV4(_amendmentHash(a));
    }

    /// @notice A policy's on-chain record.
    function policy(uint256 policyId) external view returns (Policy memory) {
        if (_policies[policyId].status == Status.None) revert InsurancePoolUnknownPolicy(policyId);
        return _policies[policyId];
    }

    /// @notice Reserves not locked by active cover.
    function freeReserves() public view returns (uint256) {
        return reserves - lockedCoverage;
    }

    /// @notice The EIP-712 digest the quoter signs for `q`.
    function quoteDigest(Quote calldata q) external view returns (bytes32) {
        return _hashTypedDataV4(_quoteHash(q));
    }

    // ------------------------------------------------------------------ admin

    /// @notice Stop purchases, payouts and capital movements (emergency).
    function pause() external onlyRole(PAUSER_ROLE) {
        _pause();
    }

    /// @notice Resume after a pause.
    function unpause() external onlyRole(PAUSER_ROLE) {
        _unpause();
    }

    // ------------------------------------------------------------------ capital (ERC-4626)

    /// @notice Pool value backing the shares: the reserves (not the token balance) less the
    ///         open claims' reserves.
    function totalAssets() public view override returns (uint256) {
        return reserves - claimsReserved;
    }

    /// @notice Deposits stop while paused.
    function maxDeposit(address receiver) public view override returns (uint256) {
        return paused() ? 0 : super.maxDeposit(receiver);
    }

    /// @notice Mints stop while paused.
    function maxMint(address receiver) public view override returns (uint256) {
        return paused() ? 0 : super.maxMint(receiver);
    }

    /// @notice Ask to withdraw `shares`: they move into escrow (with any already pending) and
    ///         the cooldown starts again for all of them.
    /// @return readyAt When the request can first be taken.
    function requestWithdrawal(uint256 shares) external nonReentrant whenNotPaused returns (uint64 readyAt) {
        if (shares == 0) revert InsurancePoolZeroAmount();
        uint256 held = balanceOf(msg.sender);
        if (shares > held) revert InsurancePoolRequestAboveShares(msg.sender, shares, held);
        _transfer(msg.sender, address(this), shares);
        requestedShares += shares;
        WithdrawalRequest storage r = _requests[msg.sender];
        r.shares += shares;
        readyAt = uint64(block.timestamp) + withdrawalCooldown;
        r.readyAt = readyAt;
        r.expiresAt = readyAt + WITHDRAWAL_WINDOW;
        emit WithdrawalRequested(msg.sender, r.shares, readyAt, r.expiresAt);
    }

    /// @notice Give the caller's pending shares back (a lapsed request too).
    function cancelWithdrawal() external nonReentrant {
        uint256 shares = _requests[msg.sender].shares;
        if (shares == 0) revert InsurancePoolNoWithdrawalRequest(msg.sender);
        delete _requests[msg.sender];
        requestedShares -= shares;
        _transfer(address(this), msg.sender, shares);
        emit WithdrawalCancelled(msg.sender, shares);
    }

    /// @notice `owner`'s pending request (all zero: none).
    function withdrawalRequest(address owner) external view returns (WithdrawalRequest memory) {
        return _requests[owner];
    }

    /// @notice Take a ready request (ERC-4626 `withdraw`): `assets` at today's share price.
    function withdraw(uint256 assets, address receiver, address owner) public override returns (uint256) {
        _requireReady(owner);
        return super.withdraw(assets, receiver, owner);
    }

    /// @notice Take a ready request (ERC-4626 `redeem`): `shares` of the request.
    function redeem(uint256 shares, address receiver, address owner) public override returns (uint256) {
        _requireReady(owner);
        return super.redeem(shares, receiver, owner);
    }

    /// @notice The assets of `owner`'s ready request, never capital locked by active cover;
    ///         zero without a ready request or while paused.
    function maxWithdraw(address owner) public view override returns (uint256) {
        if (paused()) return 0;
        uint256 own = _convertToAssets(_readyShares(owner), Math.Rounding.Floor);
        uint256 free = freeReserves();
        return own < free ? own : free;
    }

    /// @notice Shares of `owner`'s ready request redeemable now, bounded like `maxWithdraw`.
    function maxRedeem(address owner) public view override returns (uint256) {
        if (paused()) return 0;
        uint256 own = _readyShares(owner);
        uint256 free = _convertToShares(freeReserves(), Math.Rounding.Floor);
        return own < free ? own : free;
    }

    function _deposit(address caller, address receiver, uint256 assets, uint256 shares)
        internal
        override
        nonReentrant
        whenNotPaused
    {
        if (assets == 0) revert InsurancePoolZeroAmount();
        reserves += assets;
        capitalIn += assets;
        super._deposit(caller, receiver, assets, shares);
        emit CapitalDeposited(receiver, assets, shares);
    }

    /// @dev The shares burnt are the owner's escrowed ones (`requestWithdrawal`).
    function _withdraw(address caller, address receiver, address owner, uint256 assets, uint256 shares)
        internal
        override
        nonReentrant
        whenNotPaused
    {
        if (assets == 0 || shares == 0) revert InsurancePoolZeroAmount();
        uint256 free = freeReserves();
        if (assets > free) revert InsurancePoolWithdrawalAboveFree(assets, free);
        WithdrawalRequest storage r = _requests[owner];
        if (shares > r.shares) revert InsurancePoolAboveRequest(owner, shares, r.shares);
        if (caller != owner) _spendAllowance(owner, caller, shares);
        r.shares -= shares;
        if (r.shares == 0) delete _requests[owner];
        requestedShares -= shares;
        reserves -= assets;
        capitalOut += assets;
        _burn(address(this), shares);
        IERC20(asset()).safeTransfer(receiver, assets);
        emit Withdraw(caller, receiver, owner, assets, shares);
        emit CapitalWithdrawn(owner, receiver, assets, shares);
    }

    // ------------------------------------------------------------------ internals

    /// @dev A purchase for `q.holder`, paid from the holder's allowance to this pool.
    function _buy(Quote calldata q, bytes calldata signature) private returns (uint256 policyId) {
        if (block.timestamp > q.deadline) revert InsurancePoolQuoteExpired(q.deadline, block.timestamp);
        if (q.expiry <= block.timestamp) revert InsurancePoolBadExpiry(q.expiry);
        if (q.coverage == 0 || q.premium == 0) revert InsurancePoolZeroAmount();
        uint256 existing = policyIdByTerms[q.termsHash];
        if (existing != 0) revert InsurancePoolPolicyExists(q.termsHash, existing);
        address signer = ECDSA.recover(_hashTypedDataV4(_quoteHash(q)), signature);
        if (!hasRole(QUOTER_ROLE, signer)) revert InsurancePoolBadQuoteSignature(signer);
        uint256 available = reserves + q.premium - lockedCoverage;
        if (q.coverage > available) revert InsurancePoolInsufficientCapacity(q.coverage, available);

        policyId = ++policyCount;
        _policies[policyId] = Policy({
            buyer: q.holder,
            start: uint64(block.timestamp),
            expiry: q.expiry,
            status: Status.Active,
            coverage: q.coverage,
            premium: q.premium,
            paid: 0,
            termsHash: q.termsHash,
            reserved: 0
        });
        policyIdByTerms[q.termsHash] = policyId;
        reserves += q.premium;
        premiumsIn += q.premium;
        lockedCoverage += q.coverage;
        IERC20(asset()).safeTransferFrom(q.holder, address(this), q.premium);
        emit PolicyPurchased(policyId, q.holder, q.termsHash, q.coverage, q.premium, q.expiry);
        policyToken.mint(q.holder, policyId);
    }

    function _active(uint256 policyId) private view returns (Policy storage p) {
        p = _policies[policyId];
        if (p.status == Status.None) revert InsurancePoolUnknownPolicy(policyId);
        if (p.status != Status.Active) revert InsurancePoolPolicyNotActive(policyId, p.status);
    }

    function _pay(Policy storage p, uint256 policyId, uint256 amount, bytes32 claimRef) private {
        if (amount == 0) revert InsurancePoolZeroAmount();
        if (amount > p.coverage) revert InsurancePoolPayoutAboveCoverage(amount, p.coverage);
        uint256 available = reserves - (lockedCoverage - p.coverage);
        if (amount > available) revert InsurancePoolPayoutAboveFreeReserves(amount, available);
        _unreserve(p, policyId);
        p.status = Status.Paid;
        p.paid += amount; // after any part paid earlier (`payClaimPart`)
        lockedCoverage -= p.coverage;
        reserves -= amount;
        claimsPaid += amount;
        address to = policyToken.ownerOf(policyId);
        IERC20(asset()).safeTransfer(to, amount);
        emit ClaimPaid(policyId, to, amount, claimRef);
    }

    function _unreserve(Policy storage p, uint256 policyId) private {
        if (p.reserved == 0) return;
        claimsReserved -= p.reserved;
        p.reserved = 0;
        emit ClaimReserveSet(policyId, 0, claimsReserved);
    }

    function _requireReady(address owner) private view {
        WithdrawalRequest storage r = _requests[owner];
        if (r.shares == 0) revert InsurancePoolNoWithdrawalRequest(owner);
        if (block.timestamp < r.readyAt) revert InsurancePoolWithdrawalNotReady(owner, r.readyAt);
        if (block.timestamp >= r.expiresAt) revert InsurancePoolWithdrawalLapsed(owner, r.expiresAt);
    }

    function _readyShares(address owner) private view returns (uint256) {
        WithdrawalRequest storage r = _requests[owner];
        if (r.shares == 0 || block.timestamp < r.readyAt || block.timestamp >= r.expiresAt) return 0;
        return r.shares;
    }

    function _quoteHash(Quote calldata q) private pure returns (bytes32) {
        return keccak256(
            abi.encode(QUOTE_TYPEHASH, q.holder, q.termsHash, q.coverage, q.premium, q.expiry, q.deadline)
        );
    }

    function _amendmentHash(Amendment calldata a) private pure returns (bytes32) {
        return keccak256(
            abi.encode(
                AMENDMENT_TYPEHASH,
                a.policyId,
                a.fromTerms,
                a.termsHash,
                a.coverage,
                a.charge,
                a.refund,
                a.expiry,
                a.deadline
            )
        );
    }

    /// @inheritdoc AccessControl
    function supportsInterface(bytes4 interfaceId) public view override returns (bool) {
        return super.supportsInterface(interfaceId);
    }
}
