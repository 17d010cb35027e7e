// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC721Receiver} from "@openzeppelin/contracts/token/ERC721/IERC721Receiver.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {InsurancePool} from "../src/InsurancePool.sol";

/// @title Test attacker: re-enters the pool from the policy token's receive callback
/// @notice Test-only. Buys a policy through `attack`; when the pool mints it the policy token,
///         `onERC721Received` calls back into the pool (a second purchase, a withdrawal request, a release).
contract ReentrantHolder is IERC721Receiver {
    InsurancePool public immutable pool;
    uint8 public mode; // 1: buy again, 2: request a withdrawal, 3: release cover
    InsurancePool.Quote private _quote;
    bytes private _sig;

    constructor(InsurancePool pool_) {
        pool = pool_;
    }

    /// @notice Approve the pool, deposit `capital` and buy `q` with `sig`, re-entering per `mode_`.
    function attack(InsurancePool.Quote calldata q, bytes calldata sig, uint8 mode_, uint256 capital)
        external
    {
        mode = mode_;
        _quote = q;
        _sig = sig;
        IERC20(pool.asset()).approve(address(pool), type(uint256).max);
        if (capital > 0) pool.deposit(capital, address(this));
        pool.buyPolicy(q, sig);
    }

    /// @notice The re-entry point.
    function onERC721Received(address, address, uint256 id, bytes calldata) external returns (bytes4) {
        if (mode == 1) pool.buyPolicy(_quote, _sig);
        if (mode == 2) pool.requestWithdrawal(1);
        if (mode == 3) pool.releaseCover(id);
        return IERC721Receiver.onERC721Received.selector;
    }
}
