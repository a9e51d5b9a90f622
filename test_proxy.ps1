<#
.SYNOPSIS
    Start three test backends and send requests to Sentinel through them.

.DESCRIPTION
    Starts backend_server.py as backend1, backend2, backend3 on 127.0.0.1
    ports 3000, 3001, 3002 (override with -Ports or the BACKEND_PORTS
    environment variable, e.g. $env:BACKEND_PORTS = "4000 4001 4002"),
    waits for Sentinel to answer at -SentinelUrl, then sends -Requests
    requests to -SentinelUrl + -ProxyPrefix + /hello and shows which backend
    answered each one, and prints more requests to try. The backends this
    script started are stopped at the end, also on Ctrl-C or error.

    -ProxyPrefix (or the PROXY_PREFIX environment variable) is the path
    prefix Sentinel proxies to these backends: /api by default, as in
    docs/examples/proxy-demo.yaml, which strips it (/api/hello reaches a
    backend as /hello). Pass -ProxyPrefix '' for a config that proxies every
    path.

    Works with Windows PowerShell 5.1 and PowerShell 7+.

.EXAMPLE
    .\test_proxy.ps1
.EXAMPLE
    .\test_proxy.ps1 -Requests 20 -SentinelUrl http://127.0.0.1:9090/
.EXAMPLE
    .\test_proxy.ps1 -ProxyPrefix ''
#>
[CmdletBinding()]
param(
    [int[]]  $Ports,
    [string] $SentinelUrl = 'http://127.0.0.1:8080/',
    [string] $ProxyPrefix,
    [int]    $Requests = 10,
    [int]    $WaitSeconds = 30,
    [string] $Python,
    [switch] $NoPrompt
)

$ErrorActionPreference = 'Stop'

if (-not $Ports) {
    if ($env:BACKEND_PORTS) {
        $Ports = $env:BACKEND_PORTS -split '[\s,]+' | Where-Object { $_ } | ForEach-Object { [int]$_ }
    } else {
        $Ports = 3000, 3001, 3002
    }
}

# An unset [string] parameter is '', so ask whether it was passed: '' is a valid prefix.
if (-not $PSBoundParameters.ContainsKey('ProxyPrefix')) {
    if ($null -ne $env:PROXY_PREFIX) { $ProxyPrefix = $env:PROXY_PREFIX } else { $ProxyPrefix = '/api' }
}
# Where requests go. The demo config strips the prefix, so $api/hello reaches a backend as /hello.
$api = $SentinelUrl.TrimEnd('/') + $ProxyPrefix
$requestUrl = "$api/hello"

# Pick a Python 3 interpreter: -Python, $env:PYTHON, then python / python3 / py.
if (-not $Python) { $Python = $env:PYTHON }
if (-not $Python) {
    foreach ($candidate in 'python', 'python3', 'py') {
        if (Get-Command $candidate -ErrorAction SilentlyContinue) { $Python = $candidate; break }
    }
}
if (-not $Python) { throw 'Python 3 not found; pass -Python or set $env:PYTHON.' }

$backendScript = Join-Path $PSScriptRoot 'backend_server.py'
if (-not (Test-Path $backendScript)) { throw "backend_server.py not found next to this script ($backendScript)." }

function Get-BackendName($Response) {
    $value = $Response.Headers['X-Backend']
    if ($value -is [array]) { $value = $value -join ', ' }
    if (-not $value) { $value = '(no X-Backend header)' }
    return $value
}

function Test-Url([string]$Url) {
    try {
        $null = Invoke-WebRequest -Uri $Url -UseBasicParsing -TimeoutSec 2
        return $true
    } catch {
        # Any HTTP response (even 4xx/5xx) means something is listening.
        return $null -ne $_.Exception.Response
    }
}

$processes = @()
try {
    for ($i = 0; $i -lt $Ports.Count; $i++) {
        $port = $Ports[$i]
        $name = "backend$($i + 1)"
        # Quote the script path: Start-Process joins arguments with spaces.
        $arguments = @("`"$backendScript`"", "$port", $name)
        $proc = Start-Process -FilePath $Python -ArgumentList $arguments -NoNewWindow -PassThru
        $processes += $proc
        Write-Host "Started $name on 127.0.0.1:$port (PID $($proc.Id))"
    }

    # Wait until every backend answers its health check.
    for ($i = 0; $i -lt $Ports.Count; $i++) {
        $healthUrl = "http://127.0.0.1:$($Ports[$i])/health"
        $deadline = (Get-Date).AddSeconds(10)
        while (-not (Test-Url $healthUrl)) {
            if ($processes[$i].HasExited) { throw "backend$($i + 1) (port $($Ports[$i])) exited at startup." }
            if ((Get-Date) -gt $deadline) { throw "backend$($i + 1) did not answer at $healthUrl." }
            Start-Sleep -Milliseconds 200
        }
    }

    Write-Host ''
    Write-Host 'Backends are running:'
    for ($i = 0; $i -lt $Ports.Count; $i++) {
        Write-Host ("  backend{0}  http://127.0.0.1:{1}/" -f ($i + 1), $Ports[$i])
    }
    Write-Host ''
    Write-Host "Start Sentinel with a config that proxies $ProxyPrefix/ to these addresses"
    Write-Host '(docs/examples/proxy-demo.yaml does, with the default ports).'
    Write-Host "Waiting up to $WaitSeconds s for Sentinel at $SentinelUrl ..."

    $deadline = (Get-Date).AddSeconds($WaitSeconds)
    while (-not (Test-Url $SentinelUrl)) {
        if ((Get-Date) -gt $deadline) { break }
        Start-Sleep -Milliseconds 500
    }

    $counts = @{}
    for ($n = 1; $n -le $Requests; $n++) {
        try {
            $response = Invoke-WebRequest -Uri $requestUrl -UseBasicParsing -TimeoutSec 10
            $backend = Get-BackendName $response
            Write-Host ("{0,3}: {1} {2}" -f $n, [int]$response.StatusCode, $backend)
        } catch {
            $errResponse = $_.Exception.Response
            if ($errResponse) {
                $backend = "HTTP $([int]$errResponse.StatusCode)"
                Write-Host ("{0,3}: {1}" -f $n, $backend)
            } else {
                $backend = 'no response'
                Write-Host ("{0,3}: no response ({1})" -f $n, $_.Exception.Message)
            }
        }
        if ($counts.ContainsKey($backend)) { $counts[$backend] += 1 } else { $counts[$backend] = 1 }
        Start-Sleep -Milliseconds 200
    }

    Write-Host ''
    Write-Host 'Answers per backend:'
    foreach ($key in ($counts.Keys | Sort-Object)) {
        Write-Host ("  {0,-20} {1}" -f $key, $counts[$key])
    }

    Write-Host ''
    Write-Host 'More to try:'
    Write-Host "  Invoke-RestMethod $api/hello                  # JSON says which backend answered"
    Write-Host "  (Invoke-WebRequest $api/hello -UseBasicParsing).Headers['X-Backend']"
    Write-Host "  Invoke-RestMethod '$api/slow?ms=500'          # a slow request"
    Write-Host "  try { Invoke-WebRequest $api/status/503 -UseBasicParsing } catch { [int]`$_.Exception.Response.StatusCode }  # an upstream error status"
    Write-Host "  (Invoke-WebRequest $api/bytes/1048576 -UseBasicParsing).RawContentLength  # a 1 MiB streamed body"
    Write-Host "  Invoke-RestMethod $api/echo -Method Post -Body 'hi'  # request body echoed back"
    Write-Host ''
    Write-Host 'Stop one backend (Stop-Process -Id <PID>) to watch Sentinel route around it.'

    if (-not $NoPrompt) {
        Write-Host ''
        $null = Read-Host 'Press Enter to stop the backends'
    }
}
finally {
    foreach ($proc in $processes) {
        if (-not $proc.HasExited) {
            Write-Host "Stopping PID $($proc.Id)"
            Stop-Process -Id $proc.Id -Force -ErrorAction SilentlyContinue
        }
    }
}
