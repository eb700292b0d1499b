-- tollgate for Neovim (0.11+; inline completion needs 0.12).
--
--   require("tollgate").setup()                       -- defaults below
--   require("tollgate").setup({ cmd = { "/path/to/tollgate", "lsp" } })
--
-- Inline completion: <Tab> accepts (when a suggestion shows), <M-]> / <M-[> cycle.
-- Code actions (`gra` / vim.lsp.buf.code_action()): Explain, Review selection, Generate tests,
-- Generate docs, Fix this diagnostic. :TollgateExplain and :TollgateReview work on a range.
-- The statusline component require("tollgate").statusline() shows the route, budget left and
-- whether the daemon answers.
local M = {}

M.defaults = {
  cmd = { "tollgate", "lsp" },
  filetypes = {
    "rust", "python", "javascript", "javascriptreact", "typescript", "typescriptreact",
    "go", "java", "c", "cpp", "lua", "ruby", "sh", "toml", "yaml", "json", "markdown",
  },
  root_markers = { ".git" },
  inline_completion = true,
  keymaps = true,
}

--- The last `tollgate/status` the server sent.
M.status = nil

local function on_status(_, result)
  M.status = result
  vim.api.nvim_exec_autocmds("User", { pattern = "TollgateStatus", modeline = false })
end

--- JSON null arrives as vim.NIL, which is truthy.
local function val(x)
  if x == vim.NIL then
    return nil
  end
  return x
end

function M.statusline()
  local s = M.status
  if not s then
    return ""
  end
  if not val(s.reachable) then
    return "tollgate: offline"
  end
  local parts = { "tollgate" }
  if val(s.route) then
    table.insert(parts, s.route)
  end
  if val(s.budget_left) then
    table.insert(parts, s.budget_left)
  end
  if val(s.redactions) and s.redactions > 0 then
    table.insert(parts, s.redactions .. " masked")
  end
  return table.concat(parts, " · ")
end

local function client_of(bufnr)
  return vim.lsp.get_clients({ bufnr = bufnr or 0, name = "tollgate" })[1]
end

--- Runs a tollgate command on lines `l1..l2` of the current buffer.
local function run(command, l1, l2)
  local client = client_of(0)
  if not client then
    vim.notify("tollgate is not attached to this buffer", vim.log.levels.WARN)
    return
  end
  local range = {
    start = { line = l1 - 1, character = 0 },
    ["end"] = { line = l2, character = 0 },
  }
  client:exec_cmd({ title = command, command = command, arguments = { vim.uri_from_bufnr(0), range } }, { bufnr = 0 })
end

function M.setup(opts)
  opts = vim.tbl_deep_extend("force", M.defaults, opts or {})
  vim.lsp.config("tollgate", {
    cmd = opts.cmd,
    filetypes = opts.filetypes,
    root_markers = opts.root_markers,
    handlers = { ["tollgate/status"] = on_status },
  })
  vim.lsp.enable("tollgate")

  vim.api.nvim_create_autocmd("LspAttach", {
    group = vim.api.nvim_create_augroup("tollgate", { clear = true }),
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if not client or client.name ~= "tollgate" then
        return
      end
      if opts.inline_completion and vim.lsp.inline_completion then
        vim.lsp.inline_completion.enable(true, { bufnr = args.buf })
        if opts.keymaps then
          vim.keymap.set("i", "<Tab>", function()
            if not vim.lsp.inline_completion.get() then
              return "<Tab>"
            end
          end, { expr = true, buffer = args.buf, desc = "tollgate: accept the inline completion" })
          vim.keymap.set("i", "<M-]>", function()
            vim.lsp.inline_completion.select({ count = 1 })
          end, { buffer = args.buf, desc = "tollgate: next completion" })
          vim.keymap.set("i", "<M-[>", function()
            vim.lsp.inline_completion.select({ count = -1 })
          end, { buffer = args.buf, desc = "tollgate: previous completion" })
        end
      end
    end,
  })

  vim.api.nvim_create_user_command("TollgateExplain", function(c)
    run("tollgate.explain", c.line1, c.line2)
  end, { range = true, desc = "tollgate: explain the lines (or the function at the cursor)" })
  vim.api.nvim_create_user_command("TollgateReview", function(c)
    run("tollgate.review", c.line1, c.line2)
  end, { range = true, desc = "tollgate: review the lines; findings become diagnostics" })
  vim.api.nvim_create_user_command("TollgateTests", function(c)
    run("tollgate.tests", c.line1, c.line2)
  end, { range = true, desc = "tollgate: generate tests for the lines" })
end

return M
