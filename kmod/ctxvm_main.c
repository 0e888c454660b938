// SPDX-License-Identifier: GPL-2.0
/*
 * ctxvm kernel module: stub.  Registers the misc device /dev/ctxvm; every
 * ioctl answers -ENOTTY until the kernel backend lands.
 */
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>

static long ctxvm_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	return -ENOTTY;
}

static const struct file_operations ctxvm_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = ctxvm_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice ctxvm_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "ctxvm",
	.fops = &ctxvm_fops,
};

module_misc_device(ctxvm_misc);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("ctxvm: MASM contexts in the kernel (stub)");
