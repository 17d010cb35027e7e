// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";

/// @title BTI policy token
/// @notice One ERC-721 per insurance policy; its owner is the policy's holder and receives the
///         payout of a claim. Minted only by the insurance pool that owns this contract.
contract BTIPolicy is ERC721, Ownable {
    /// @param initialOwner The deployer, who hands ownership to the pool once it is deployed.
    constructor(address initialOwner) ERC721("BTI Policy", "BTIP") Ownable(initialOwner) {}

    /// @notice Mint policy `id` to `to`, calling `onERC721Received` if `to` is a contract.
    /// @dev Only the owner (the pool).
    function mint(address to, uint256 id) external onlyOwner {
        _safeMint(to, id);
    }
}
