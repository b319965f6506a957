// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

interface ITokenReceiver {
    function onTokenReceived(address from, uint256 amount) external;
}

/// A deliberately hostile ERC-20 for adversarial tests. `hooks` makes every
/// transfer call the recipient (ERC-777 style) when it is a contract, which
/// SNM never does; `returnFalse` makes transfers fail by returning false
/// instead of reverting, as some tokens do.
contract MockToken {
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;
    uint256 public totalSupply;
    bool public hooks;
    bool public returnFalse;

    constructor(address holder, uint256 supply) {
        balanceOf[holder] = supply;
        totalSupply = supply;
    }

    function setHooks(bool on) external {
        hooks = on;
    }

    function setReturnFalse(bool on) external {
        returnFalse = on;
    }

    function approve(address spender, uint256 value) external returns (bool) {
        allowance[msg.sender][spender] = value;
        return true;
    }

    function transfer(address to, uint256 value) external returns (bool) {
        return _move(msg.sender, to, value);
    }

    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        if (returnFalse) return false;
        uint256 allowed = allowance[from][msg.sender];
        require(allowed >= value, "allowance");
        if (allowed != type(uint256).max) allowance[from][msg.sender] = allowed - value;
        return _move(from, to, value);
    }

    function _move(address from, address to, uint256 value) private returns (bool) {
        if (returnFalse) return false;
        require(balanceOf[from] >= value, "balance");
        balanceOf[from] -= value;
        balanceOf[to] += value;
        if (hooks && to.code.length != 0) {
            // The recipient runs arbitrary code in the middle of the payer's
            // transaction; its own failure is ignored (the Market, for one,
            // has no such hook).
            (bool ok,) = to.call(abi.encodeCall(ITokenReceiver.onTokenReceived, (from, value)));
            ok;
        }
        return true;
    }
}
