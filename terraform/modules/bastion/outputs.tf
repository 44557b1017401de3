output "public_ip" {
  description = "Public IPv4 address of the bastion (an Elastic IP: it survives a replacement)."
  value       = aws_eip.bastion.public_ip
}

output "security_group_id" {
  description = "Security group of the bastion."
  value       = aws_security_group.bastion.id
}
