"""A small catalogue of real Nessus plugins (ids, names, families, scores) for generated
findings. Texts are shortened from the real plugins; outputs are ``str.format`` templates
filled with ``host``, ``ip``, ``port``, ``svc``, ``os``, ``user``, ``fqdn``."""

from __future__ import annotations

import msgspec


class Plugin(msgspec.Struct, frozen=True, kw_only=True):
    plugin_id: int
    name: str
    family: str
    severity: int
    synopsis: str
    description: str
    solution: str = "n/a"
    output: str = ""
    fname: str = ""
    plugin_type: str = "remote"
    publication_date: str = "2010/01/01"
    modification_date: str = "2024/06/10"
    cvss_base_score: str | None = None
    cvss_vector: str | None = None
    cvss3_base_score: str | None = None
    cvss3_vector: str | None = None
    cves: tuple[str, ...] = ()
    exploit_available: bool | None = None
    see_also: str | None = None

    @property
    def risk_factor(self) -> str:
        return ("None", "Low", "Medium", "High", "Critical")[self.severity]


def _info(
    pid: int, name: str, family: str, synopsis: str, output: str = "", *, fname: str = ""
) -> Plugin:
    return Plugin(
        plugin_id=pid,
        name=name,
        family=family,
        severity=0,
        synopsis=synopsis,
        description=synopsis,
        output=output,
        fname=fname,
    )


SYN_SCANNER = _info(
    11219,
    "Nessus SYN scanner",
    "Port scanners",
    "It is possible to determine which TCP ports are open.",
    "Port {port}/tcp was found to be open",
    fname="nessus_syn_scanner.nbin",
)
SERVICE_DETECTION = _info(
    22964,
    "Service Detection",
    "Service detection",
    "The remote service could be identified.",
    "A {svc} server is running on this port.",
    fname="find_service.nasl",
)

#: informational plugins every host gets, reported on ``port``
HOST_INFO: tuple[tuple[Plugin, int, str, str], ...] = (
    (
        _info(
            10287,
            "Traceroute Information",
            "General",
            "It was possible to obtain traceroute information.",
            "For your information, here is the traceroute from 10.0.0.2 to {ip} : \n10.0.0.2\n"
            "{ip}\n\nHop Count: 1\n",
            fname="traceroute.nasl",
        ),
        0,
        "general",
        "udp",
    ),
    (
        _info(
            11936,
            "OS Identification",
            "General",
            "It is possible to guess the remote operating system.",
            "\nRemote operating system : {os}\nConfidence level : 95\nMethod : SSH\n",
            fname="os_fingerprint.nasl",
        ),
        0,
        "general",
        "tcp",
    ),
    (
        _info(
            54615,
            "Device Type",
            "General",
            "It is possible to guess the remote device type.",
            "Remote device type : general-purpose\nConfidence level : 95\n",
            fname="device_type.nasl",
        ),
        0,
        "general",
        "tcp",
    ),
    (
        _info(
            45590,
            "Common Platform Enumeration (CPE)",
            "General",
            "It was possible to enumerate CPE names that matched on the remote system.",
            "\nThe remote operating system matched the following CPE : \n\n"
            "  cpe:/o:canonical:ubuntu_linux\n",
            fname="cpe.nbin",
        ),
        0,
        "general",
        "tcp",
    ),
    (
        _info(
            25220,
            "TCP/IP Timestamps Supported",
            "General",
            "The remote service implements TCP timestamps.",
            fname="tcp_timestamps.nasl",
        ),
        0,
        "general",
        "tcp",
    ),
    (
        _info(
            10267,
            "SSH Server Type and Version Information",
            "Service detection",
            "An SSH server is listening on this port.",
            "\n  SSH version : SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6\n  SSH supported "
            "authentication : publickey,password\n",
            fname="ssh_detect.nasl",
        ),
        22,
        "ssh",
        "tcp",
    ),
    (
        _info(
            10881,
            "SSH Protocol Versions Supported",
            "General",
            "A SSH server is running on the remote host.",
            "The remote SSH daemon supports the following versions of the\nSSH protocol :\n\n"
            "  - 1.99\n  - 2.0\n",
            fname="ssh_proto_version.nasl",
        ),
        22,
        "ssh",
        "tcp",
    ),
    (
        _info(
            39520,
            "Backported Security Patch Detection (SSH)",
            "General",
            "Security patches are backported.",
            "\nGive Nessus credentials to perform local checks.\n",
            fname="ssh_backport.nasl",
        ),
        22,
        "ssh",
        "tcp",
    ),
)

HTTP_INFO = (
    _info(
        10107,
        "HTTP Server Type and Version",
        "Web Servers",
        "A web server is running on the remote host.",
        "The remote web server type is :\n\nnginx/1.18.0 (Ubuntu)",
        fname="http_version.nasl",
    ),
    _info(
        24260,
        "HyperText Transfer Protocol (HTTP) Information",
        "Web Servers",
        "Some information about the remote HTTP configuration can be extracted.",
        "\nResponse Code : HTTP/1.1 200 OK\n\nProtocol version : HTTP/1.1\nSSL : no\n"
        "Keep-Alive : no\n",
        fname="http_info.nasl",
    ),
)
TLS_INFO = (
    _info(
        56984,
        "SSL / TLS Versions Supported",
        "General",
        "The remote service encrypts communications.",
        "\nThis port supports TLSv1.2/TLSv1.3.\n",
        fname="ssl_supported_versions.nasl",
    ),
    _info(
        10863,
        "SSL Certificate Information",
        "General",
        "This plugin displays the SSL certificate.",
        "Subject Name: \n\nCommon Name: {fqdn}\n",
        fname="ssl_certificate.nasl",
    ),
    _info(
        84502,
        "HSTS Missing From HTTPS Server",
        "Web Servers",
        "The remote web server is not enforcing HSTS.",
        "\n  HTTP Strict-Transport-Security Header not found.\n",
        fname="hsts_missing.nasl",
    ),
)

_MED_TLS = {
    "cvss_base_score": "6.4",
    "cvss_vector": "CVSS2#AV:N/AC:L/Au:N/C:P/I:P/A:N",
    "cvss3_base_score": "6.5",
    "cvss3_vector": "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:L/A:N",
}

#: (plugin, probability, port or None for any open port, service) of network findings
NETWORK_VULNS: tuple[tuple[Plugin, float, int, str], ...] = (
    (
        Plugin(
            plugin_id=10114,
            name="ICMP Timestamp Request Remote Date Disclosure",
            family="General",
            severity=1,
            synopsis="It is possible to determine the exact time set on the remote host.",
            description="The remote host answers to an ICMP timestamp "
            "request. This allows an attacker to know the date that is set on the targeted "
            "machine, which may assist an unauthenticated, remote attacker in defeating "
            "time-based authentication protocols.",
            solution="Filter out the ICMP timestamp "
            "requests (13), and the outgoing ICMP timestamp replies (14).",
            output="The difference between the local and remote clocks is 1 second.\n",
            fname="icmp_timestamp.nasl",
            cvss_base_score="2.1",
            cvss_vector="CVSS2#AV:L/AC:L/Au:N/C:P/I:N/A:N",
            cves=("CVE-1999-0524",),
            exploit_available=False,
            publication_date="1999/08/01",
        ),
        0.5,
        0,
        "icmp",
    ),
    (
        Plugin(
            plugin_id=70658,
            name="SSH Server CBC Mode Ciphers Enabled",
            family="Misc.",
            severity=1,
            synopsis="The SSH server is configured to use Cipher Block Chaining.",
            description="The SSH server is configured to support Cipher Block Chaining (CBC) "
            "encryption. This may allow an attacker to recover the plaintext message from the "
            "ciphertext.",
            solution="Contact the vendor or consult product documentation to "
            "disable CBC mode cipher encryption, and enable CTR or GCM cipher mode encryption.",
            output="\nThe following client-to-server Cipher Block Chaining (CBC) algorithms\n"
            "are supported : \n\n  aes128-cbc\n  aes256-cbc\n",
            fname="ssh_cbc_supported.nasl",
            cvss_base_score="2.6",
            cvss_vector="CVSS2#AV:N/AC:H/Au:N/C:P/I:N/A:N",
            cvss3_base_score="3.7",
            cvss3_vector="CVSS:3.0/AV:N/AC:H/PR:N/UI:N/S:U/C:L/I:N/A:N",
            cves=("CVE-2008-5161",),
            exploit_available=False,
        ),
        0.4,
        22,
        "ssh",
    ),
    (
        Plugin(
            plugin_id=187315,
            name="SSH Terrapin Prefix Truncation Weakness (CVE-2023-48795)",
            family="Misc.",
            severity=2,
            synopsis="The remote SSH server is vulnerable to a mitm prefix truncation attack.",
            description="The remote SSH server is vulnerable "
            "to a man-in-the-middle prefix truncation weakness known as Terrapin.",
            solution="Contact the vendor for an update with the strict key exchange "
            "countermeasures or disable the affected algorithms.",
            output="\nSupports following ChaCha20-Poly1305 Algorithm : \n\n"
            "  Client to Server: chacha20-poly1305@openssh.com\n",
            fname="ssh_terrapin.nbin",
            cvss3_base_score="5.9",
            cvss3_vector="CVSS:3.0/AV:N/AC:H/PR:N/UI:N/S:U/C:N/I:H/A:N",
            cvss_base_score="5.4",
            cvss_vector="CVSS2#AV:N/AC:H/Au:N/C:N/I:C/A:N",
            cves=("CVE-2023-48795",),
            exploit_available=True,
            publication_date="2023/12/20",
        ),
        0.5,
        22,
        "ssh",
    ),
    (
        Plugin(
            plugin_id=201194,
            name="OpenSSH < 9.8 RCE",
            family="Misc.",
            severity=3,
            synopsis="The SSH server running on the remote host is affected by a remote code "
            "execution vulnerability.",
            description="The version of OpenSSH installed on the "
            "remote host is prior to 9.8. It is, therefore, affected by a signal handler race "
            "condition (regreSSHion).",
            solution="Upgrade to OpenSSH 9.8 or later.",
            output="\n  Version source    : SSH-2.0-OpenSSH_8.9p1\n  Installed version : 8.9p1\n"
            "  Fixed version     : 9.8p1 / 9.8\n",
            fname="openssh_9_8.nasl",
            cvss3_base_score="8.1",
            cvss3_vector="CVSS:3.0/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H",
            cvss_base_score="9.3",
            cvss_vector="CVSS2#AV:N/AC:M/Au:N/C:C/I:C/A:C",
            cves=("CVE-2024-6387",),
            exploit_available=True,
            publication_date="2024/07/02",
        ),
        0.25,
        22,
        "ssh",
    ),
    (
        Plugin(
            plugin_id=85582,
            name="Web Application Potentially Vulnerable to Clickjacking",
            family="Web Servers",
            severity=2,
            synopsis="The remote web server may fail to "
            "mitigate a class of web application vulnerabilities.",
            description="The remote "
            "web server does not set an X-Frame-Options response header or a "
            "Content-Security-Policy 'frame-ancestors' response header in all content "
            "responses.",
            solution="Return the X-Frame-Options or Content-Security-Policy "
            "(with the 'frame-ancestors' directive) HTTP header with the page's response.",
            output="\nThe following pages do not use a clickjacking mitigation response header "
            "and contain a clickable event :\n\n  - http://{host}/\n",
            fname="clickjacking.nasl",
            cvss_base_score="4.3",
            cvss_vector="CVSS2#AV:N/AC:M/Au:N/C:N/I:P/A:N",
            exploit_available=False,
            see_also="https://en.wikipedia.org/wiki/Clickjacking",
        ),
        0.6,
        80,
        "www",
    ),
    (
        Plugin(
            plugin_id=51192,
            name="SSL Certificate Cannot Be Trusted",
            family="General",
            severity=2,
            synopsis="The SSL certificate for this service cannot be trusted.",
            description="The server's X.509 certificate cannot be trusted.",
            solution="Purchase or generate a proper SSL certificate for this service.",
            output="\nThe following certificate was at the top of the certificate\nchain sent "
            "by the remote host, but it is signed by an unknown\ncertificate authority :\n\n"
            "|-Subject : CN={fqdn}\n|-Issuer  : CN={fqdn}\n",
            fname="ssl_certificate_chain.nasl",
            cvss_base_score=_MED_TLS["cvss_base_score"],
            cvss_vector=_MED_TLS["cvss_vector"],
            cvss3_base_score=_MED_TLS["cvss3_base_score"],
            cvss3_vector=_MED_TLS["cvss3_vector"],
        ),
        0.6,
        443,
        "www",
    ),
    (
        Plugin(
            plugin_id=104743,
            name="TLS Version 1.0 Protocol Detection",
            family="Service detection",
            severity=2,
            synopsis="The remote service encrypts traffic using an older version of TLS.",
            description="The remote service accepts connections encrypted using TLS 1.0.",
            solution="Enable support for TLS 1.2 and 1.3, and disable support for TLS 1.0.",
            output="TLSv1 is enabled and the server supports at least one cipher.",
            fname="tls10_detection.nasl",
            cvss_base_score=_MED_TLS["cvss_base_score"],
            cvss_vector=_MED_TLS["cvss_vector"],
            cvss3_base_score=_MED_TLS["cvss3_base_score"],
            cvss3_vector=_MED_TLS["cvss3_vector"],
        ),
        0.4,
        443,
        "www",
    ),
    (
        Plugin(
            plugin_id=42873,
            name="SSL Medium Strength Cipher Suites Supported (SWEET32)",
            family="General",
            severity=3,
            synopsis="The remote service supports the use of medium strength SSL ciphers.",
            description="The remote host supports the use of "
            "SSL ciphers that offer medium strength encryption, including 3DES.",
            solution="Reconfigure the affected application if possible to avoid use of medium "
            "strength ciphers.",
            output="\n  Medium Strength Ciphers (> 64-bit and < 112-bit "
            "key, or 3DES)\n\n    DES-CBC3-SHA                 kRSA   Au=RSA   Enc=3DES-CBC(168)"
            "\n",
            fname="ssl_medium_supported_ciphers.nasl",
            cvss_base_score="5.0",
            cvss_vector="CVSS2#AV:N/AC:L/Au:N/C:P/I:N/A:N",
            cvss3_base_score="7.5",
            cvss3_vector="CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N",
            cves=("CVE-2016-2183",),
            exploit_available=False,
        ),
        0.3,
        443,
        "www",
    ),
    (
        Plugin(
            plugin_id=33850,
            name="Unix Operating System Unsupported Version Detection",
            family="General",
            severity=4,
            synopsis="The operating system running on the remote host is no longer supported.",
            description="According to its self-reported "
            "version number, the Unix operating system running on the remote host is no longer "
            "supported.",
            solution="Upgrade to a version of the Unix operating system that is "
            "currently supported.",
            output="\nUbuntu 14.04 support ended on 2019-04-30.\n",
            fname="unsupported_operating_system.nasl",
            cvss_base_score="10.0",
            cvss_vector="CVSS2#AV:N/AC:L/Au:N/C:C/I:C/A:C",
            cvss3_base_score="10.0",
            cvss3_vector="CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H",
        ),
        0.08,
        0,
        "general",
    ),
)

#: informational and local plugins only a successful SSH login yields
LOCAL_INFO = (
    _info(
        97993,
        "OS Identification and Installed Software Enumeration over SSH v2 (Using New SSH Library)",
        "General",
        "Information about the remote host can be disclosed via an authenticated session.",
        "\nIt was possible to log into the remote host via SSH "
        "using 'password' authentication.\n\nThe output of \"uname -a\" is :\nLinux {host} "
        "5.15.0-91-generic #101-Ubuntu SMP x86_64 GNU/Linux\n\nLocal checks have been "
        "enabled for this host.\n",
        fname="ssh_get_info2.nasl",
    ),
    _info(
        22869,
        "Software Enumeration (SSH)",
        "General",
        "It was possible to enumerate installed software on the remote host via SSH.",
        "\nHere is the list of packages "
        "installed on the remote Debian Linux system : \n\n  ii  openssh-server 1:8.9p1-3\n"
        "  ii  openssl 3.0.2-0ubuntu1.12\n",
        fname="ssh_software_enumeration.nasl",
    ),
    _info(
        110483,
        "Unix / Linux Running Processes Information",
        "General",
        "Uses /bin/ps "
        "auxww to obtain the list of running processes on the target machine at scan time.",
        "USER PID %CPU %MEM COMMAND\nroot 1 0.0 0.1 /sbin/init\n",
        fname="linux_process_information.nasl",
    ),
    _info(
        66334,
        "Patch Report",
        "General",
        "The remote host is missing several patches.",
        "\n. You need to take the following action :\n\n[ OpenSSH < 9.8 RCE (201194) ]\n",
        fname="patches_summary.nbin",
    ),
)
LOCAL_VULNS = (
    (
        Plugin(
            plugin_id=155999,
            name="Apache Log4j < 2.15.0 Remote Code Execution (Nix)",
            family="Misc.",
            severity=4,
            synopsis="A package installed on the remote host is "
            "affected by a remote code execution vulnerability.",
            description="The version of "
            "Apache Log4j on the remote host is 2.x < 2.15.0 (Log4Shell).",
            solution="Upgrade to Apache Log4j version 2.15.0 or later.",
            output="\n  Path              : "
            "/opt/app/lib/log4j-core-2.14.1.jar\n  Installed version : 2.14.1\n  Fixed version"
            "     : 2.15.0\n",
            fname="apache_log4j_2_15_0_nix.nasl",
            plugin_type="local",
            cvss_base_score="10.0",
            cvss_vector="CVSS2#AV:N/AC:L/Au:N/C:C/I:C/A:C",
            cvss3_base_score="10.0",
            cvss3_vector="CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H",
            cves=("CVE-2021-44228",),
            exploit_available=True,
            publication_date="2021/12/11",
        ),
        0.15,
    ),
)
