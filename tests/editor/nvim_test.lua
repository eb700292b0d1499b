-- Drives headless Neovim as a real LSP client of `tollgate lsp`, through the editor-clients/neovim
-- plugin: inline completion (Neovim's own vim.lsp.inline_completion, accepted as <Tab> would),
-- the Explain code action, and a review's diagnostics. Writes what happened to $TOLLGATE_TEST_OUT.
local out = {}
local function finish(err)
  out.error = err
  local f = assert(io.open(os.getenv("TOLLGATE_TEST_OUT"), "w"))
  f:write(vim.json.encode(out))
  f:close()
  vim.cmd("qa!")
end

local ok, err = pcall(function()
  vim.opt.rtp:prepend(os.getenv("TOLLGATE_TEST_PLUGIN"))
  -- In insert mode the cursor may sit after a line's last character; let normal mode place it there.
  vim.o.virtualedit = "onemore"
  require("tollgate").setup({ cmd = { os.getenv("TOLLGATE_BIN"), "lsp" } })
  local dir = os.getenv("TOLLGATE_TEST_DIR")

  local function attach(file)
    vim.cmd.edit(dir .. "/" .. file)
    assert(vim.wait(15000, function()
      return #vim.lsp.get_clients({ bufnr = 0, name = "tollgate" }) > 0
    end, 20), "tollgate did not attach to " .. file)
    return vim.lsp.get_clients({ bufnr = 0, name = "tollgate" })[1]
  end

  --- Puts the cursor at the `@` marker (removed), enters insert mode as Neovim's inline completion
  --- sees it, and accepts the suggestion; returns the buffer's text.
  local function complete_at_marker()
    local lines = vim.api.nvim_buf_get_lines(0, 0, -1, false)
    for i, line in ipairs(lines) do
      local col = line:find("@", 1, true)
      if col then
        vim.api.nvim_buf_set_lines(0, i - 1, i, false, { line:sub(1, col - 1) .. line:sub(col + 1) })
        vim.api.nvim_win_set_cursor(0, { i, col - 1 })
        break
      end
    end
    assert(vim.lsp.inline_completion.is_enabled({ bufnr = 0 }), "inline completion is not enabled")
    vim.api.nvim_exec_autocmds("InsertEnter", { buffer = 0 })
    local accepted = vim.wait(15000, function()
      return vim.lsp.inline_completion.get()
    end, 50)
    assert(accepted, "no inline completion arrived")
    vim.wait(1000, function() return false end, 50) -- get() applies on the next tick
    return table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n")
  end

  attach("src/lib.rs")
  out.rust = complete_at_marker()
  attach("app.py")
  out.python = complete_at_marker()

  -- Explain: offered as a code action; the model runs when it is picked; the explanation opens
  -- as a Markdown document (window/showDocument).
  vim.cmd.edit(dir .. "/src/lib.rs")
  local client = vim.lsp.get_clients({ bufnr = 0, name = "tollgate" })[1]
  local params = vim.lsp.util.make_range_params(0, client.offset_encoding)
  params.range = { start = { line = 0, character = 0 }, ["end"] = { line = 3, character = 0 } }
  params.context = { diagnostics = {} }
  local actions = client:request_sync("textDocument/codeAction", params, 10000, 0).result
  out.actions = {}
  local explain
  for _, a in ipairs(actions) do
    table.insert(out.actions, a.title)
    if a.title == "tollgate: Explain" then
      explain = a
    end
  end
  assert(explain, "no Explain action")
  client:exec_cmd(explain.command, { bufnr = 0 })
  assert(vim.wait(15000, function()
    return vim.api.nvim_buf_get_name(0):match("tollgate%-explanation") ~= nil
  end, 50), "the explanation did not open")
  out.explanation = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n")

  -- Review: findings come back as diagnostics with source tollgate, and a quick fix.
  vim.cmd.edit(dir .. "/src/lib.rs")
  local buf = vim.api.nvim_get_current_buf()
  vim.cmd("1,4TollgateReview")
  assert(vim.wait(15000, function()
    return #vim.diagnostic.get(buf) > 0
  end, 50), "no review diagnostics")
  out.diagnostics = {}
  for _, d in ipairs(vim.diagnostic.get(buf)) do
    table.insert(out.diagnostics, { lnum = d.lnum, message = d.message, source = d.source, severity = d.severity })
  end
  out.status = require("tollgate").status
  out.statusline = require("tollgate").statusline()
end)
finish(ok and vim.NIL or tostring(err))
