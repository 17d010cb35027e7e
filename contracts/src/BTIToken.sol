// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/// @title BTI token
/// @notice The ERC-20 in which premiums, pool capital and claim payouts are paid
///         (18 decimals; one BTI stands for one USDT of cover).
contract BTIToken is ERC20, ERC20Permit, AccessControl {
    /// @notice Role allowed to create tokens (the demo faucet).
    bytes32 public constant MINTER_ROLE = keccak256("MINTER_ROLE");

    /// @param admin Receives the admin and minter roles.
    constructor(address admin) ERC20("BTI", "BTI") ERC20Permit("BTI") {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(MINTER_ROLE, admin);
    }

    /// @notice Create `amount` tokens for `to`.
    /// @dev Only MINTER_ROLE; reverts with AccessControlUnauthorizedAccount otherwise.
    function mint(address to, uint256 amount) external onlyRole(MINTER_ROLE) {
        _mint(to, amount);
    }
}
